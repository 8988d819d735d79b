# A minimal Django project serving django-chunked-upload's two views, for bench/run.sh to
# measure beside chute. No auth middleware: the package then stores uploads without a user.
import os

BASE = os.environ.get("BENCH_DJANGO_DIR", "/tmp/chute-bench-django")
SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "chunked_upload",
]
MIDDLEWARE = []
ROOT_URLCONF = "benchproj.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(BASE, "db.sqlite3")}}
MEDIA_ROOT = os.path.join(BASE, "media")
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
