#!/usr/bin/env bash
# Runs Debian's clamd in the foreground for the tests, on loopback only, with a signature
# database this script writes itself: one signature for the standard EICAR test string (no
# internet, no freshclam). Usage: clamd-test.sh DIR TCP_PORT [STREAM_MAX_LENGTH]
# The unix socket is DIR/clamd.sock. The process execs into clamd, so its PID is clamd's.
set -euo pipefail
dir=$1
port=$2
max=${3:-25M}
command -v clamd >/dev/null || { echo "clamd is not installed (apt-get install clamav-daemon)" >&2; exit 2; }
mkdir -p "$dir/db"
# The EICAR test file, as a ClamAV extended (body) signature: name:target:offset:hex.
eicar='X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
hex=$(printf '%s' "$eicar" | od -An -v -tx1 | tr -d ' \n')
printf 'Chute-Test.EICAR:0:*:%s\n' "$hex" > "$dir/db/chute-test.ndb"
cat > "$dir/clamd.conf" <<CONF
Foreground yes
DatabaseDirectory $dir/db
LocalSocket $dir/clamd.sock
TCPSocket $port
TCPAddr 127.0.0.1
StreamMaxLength $max
LogFile $dir/clamd.log
LogTime yes
PidFile $dir/clamd.pid
MaxThreads 4
CONF
exec clamd --config-file="$dir/clamd.conf"
