#!/usr/bin/env bash
# Runs Debian's nginx in the foreground for the tests, with the server block chute ships in
# config/nginx-chute.conf (or the one named). Usage:
#   nginx-test.sh DIR LISTEN CHUTE_ADDR OBJECTS_DIR [CONF (default nginx-chute.conf)]
# The process execs into nginx's master, so its PID is nginx's.
set -euo pipefail
dir=$1 listen=$2 chute=$3 objects=$4 conf=${5:-nginx-chute.conf}
here=$(cd "$(dirname "$0")" && pwd)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "nginx is not installed (apt-get install nginx-light)" >&2; exit 2; }
mkdir -p "$dir/tmp"
sed -e "s|@LISTEN@|$listen|" -e "s|@CHUTE@|$chute|" -e "s|@OBJECTS@|$objects|" \
    "$here/../config/$conf" > "$dir/chute-server.conf"
cat > "$dir/nginx.conf" <<CONF
# Workers run as this user so that they can read the test's private data folder.
user $(id -un);
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 256; }
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    include /etc/nginx/mime.types;
    sendfile on;
    include $dir/chute-server.conf;
}
CONF
exec "$(command -v nginx || echo /usr/sbin/nginx)" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
