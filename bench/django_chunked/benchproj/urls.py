from chunked_upload.views import ChunkedUploadCompleteView, ChunkedUploadView
from django.urls import path

urlpatterns = [
    path("api/chunked_upload/", ChunkedUploadView.as_view()),
    path("api/chunked_upload_complete/", ChunkedUploadCompleteView.as_view()),
]
