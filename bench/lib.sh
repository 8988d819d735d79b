# Shared by bench/run.sh and bench/tus.sh: test data, the machine's limits, arithmetic.
# Expects WORK, PIDS and SIZE_MIB; sets BYTES, SINK_MBPS, DISK_MBPS, LIMIT.

mbps() { python3 -c "import sys; print(f'{int(sys.argv[1])/float(sys.argv[2])/1e6:.0f}')" "$1" "$2"; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.3f}')" "$1" "$2"; }
ratio() { python3 -c "import sys; print(f'{int(sys.argv[1])/int(sys.argv[2]):.2f}')" "$1" "$2"; }

make_data() { # $1: MiB of random data in WORK/big.bin, its eighths in WORK/eighths, and 64 x 4 MiB in WORK/small
  echo "making $1 MiB of test data…" >&2
  head -c $(($1 * 1048576)) /dev/urandom > "$WORK/big.bin"
  mkdir -p "$WORK/eighths"; split -n 8 -d --additional-suffix=.bin "$WORK/big.bin" "$WORK/eighths/"
  mkdir -p "$WORK/small"; for i in $(seq 1 64); do head -c 4194304 /dev/urandom > "$WORK/small/$i.bin"; done
  BYTES=$(($1 * 1048576))
}

measure_limits() { # sink: curl into a server that discards; disk: dd with fsync; dsync: dd syncing every MiB
  local sink=target/release/examples/bench_sink url t0 t1
  "$sink" 127.0.0.1:0 > "$WORK/sink.out" & PIDS+=($!)
  for _ in $(seq 50); do grep -q listening "$WORK/sink.out" 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/.*listening on //p' "$WORK/sink.out")
  t0=$(now); curl -sS -o /dev/null -F "file=@$WORK/big.bin" "$url/"; t1=$(now)
  SINK_MBPS=$(mbps "$BYTES" "$(elapsed "$t0" "$t1")")
  mkdir -p "$WORK/dd"
  t0=$(now); dd if="$WORK/big.bin" of="$WORK/dd/dd.bin" bs=1M conv=fsync status=none; t1=$(now)
  DISK_MBPS=$(mbps "$BYTES" "$(elapsed "$t0" "$t1")"); rm -rf "$WORK/dd"
  # What one writer that makes every MiB durable before the next gets from this disk: the
  # ceiling of one upload whose 1 MiB PATCHes are each acknowledged durable (256 MiB of it).
  local mib=$(( BYTES / 1048576 < 256 ? BYTES / 1048576 : 256 ))
  mkdir -p "$WORK/dd"
  t0=$(now); dd if="$WORK/big.bin" of="$WORK/dd/dd.bin" bs=1M count=$mib oflag=dsync status=none; t1=$(now)
  DSYNC_MBPS=$(mbps $((mib * 1048576)) "$(elapsed "$t0" "$t1")"); rm -rf "$WORK/dd"
  LIMIT=$(( SINK_MBPS < DISK_MBPS ? SINK_MBPS : DISK_MBPS ))
}
