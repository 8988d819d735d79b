#!/usr/bin/env bash
# Checks that chute's layers only look down (crates/chute/src/lib.rs draws them):
#   checksum, names, events, metrics  leaves: name nothing of the crate
#   config                   names only the leaves
#   storage, meta, hooks     name only config, meta and the leaves (hooks sends what meta keeps)
#   upload (the engine)      names no http and no app
#   http shared modules      name no protocol adapter
#   http protocol adapters   (tus, ietf, chunked, multipart, sessions, files, events, me, links) name no other
#                            adapter, but for the draft's replay of a form upload (ietf ->
#                            multipart); http/mod.rs routes to all of them
# (config is config/: mod.rs and values.rs.)
# Prints every line that breaks a rule and fails if there is one. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/../crates/chute/src"
status=0
# $1 rule, $2 pattern (grep -E), then files
forbid() {
  local rule=$1 pattern=$2; shift 2
  local hits
  hits=$(grep -HnE "$pattern" "$@" 2>/dev/null | grep -vE '^\S+:[0-9]+:\s*//' || true)
  if [ -n "$hits" ]; then
    echo "layering: $rule" >&2
    echo "$hits" >&2
    status=1
  fi
}
leaves=(checksum.rs names.rs events.rs metrics.rs)
lower=(storage meta hooks)
adapters=(tus ietf chunked multipart sessions files events me links)
adapter_re=$(IFS='|'; echo "${adapters[*]}")

forbid "a leaf names nothing of the crate" 'crate::|super::[a-z_]+::' "${leaves[@]}"
forbid "config names only the leaves" 'crate::(app|http|upload|storage|meta|auth)\b' $(find config -name '*.rs')
forbid "storage, meta and hooks name nothing above them" 'crate::(app|http|upload|auth)\b' \
  $(find "${lower[@]}" -name '*.rs')
forbid "the engine (upload/) names no http and no app" 'crate::(app|http)\b' \
  $(find upload -name '*.rs')
shared=$(ls http/*.rs | grep -vE "^http/(mod|$adapter_re)\.rs$")
forbid "shared http modules name no protocol adapter" \
  "(super|crate::http)::($adapter_re)\b" $shared
for a in "${adapters[@]}"; do
  files=("http/$a.rs")
  [ -d "http/$a" ] && mapfile -t -O 1 files < <(find "http/$a" -name '*.rs')
  others=$(printf '%s\n' "${adapters[@]}" | grep -vx "$a" | paste -sd'|')
  pattern="(super|crate::http)::($others)\b"
  # The draft replays an upgraded form upload through the file API's form handling.
  [ "$a" = ietf ] && pattern="(super|crate::http)::($(printf '%s\n' "${adapters[@]}" | grep -vxE 'ietf|multipart' | paste -sd'|'))\b"
  # Inside tus/, `super::` is tus itself.
  if [ "$a" = tus ]; then
    forbid "protocol adapter $a names another adapter" "$pattern" "http/$a.rs"
    [ -d "http/$a" ] && forbid "protocol adapter $a names another adapter" \
      "crate::http::($others)\b" $(find "http/$a" -name '*.rs')
  else
    forbid "protocol adapter $a names another adapter" "$pattern" "${files[@]}"
  fi
done
forbid "storage and meta do not name hooks" 'crate::hooks\b' $(find storage meta -name '*.rs')
[ "$status" -eq 0 ] && echo "layering: every layer looks only down"
exit "$status"
