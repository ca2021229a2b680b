#!/usr/bin/env bash
# Mutation check: each line of scripts/mutants.txt is a small deliberate bug
# (file, exact text, replacement, the tests that must catch it). Every one
# is applied in turn to a temporary copy of the tree and its tests run;
# a mutation the tests do not catch "survives", and the script fails.
#
#   make mutants      # ~40 minutes on 2 cores (136 mutants); MUTANTS=file runs a subset
set -euo pipefail
cd "$(dirname "$0")/.."
list=${MUTANTS:-scripts/mutants.txt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -z | xargs -0 tar cf - | tar xf - -C "$work"
survived=0 caught=0 n=0
while IFS=$'\t' read -r file from to pkg run; do
  [[ -z "$file" || "$file" == \#* ]] && continue
  n=$((n + 1))
  cp "$work/$file" "$work/$file.orig"
  if ! python3 - "$work/$file" "$from" "$to" <<'PY'
import sys
path, old, new = sys.argv[1], sys.argv[2].encode().decode('unicode_escape'), sys.argv[3].encode().decode('unicode_escape')
s = open(path).read()
if s.count(old) != 1:
    sys.exit(f"mutation text found {s.count(old)} times (want once) in {path}: {old!r}")
open(path, 'w').write(s.replace(old, new))
PY
  then
    echo "ERROR  #$n $file: the mutation no longer applies; update $list" >&2
    exit 2
  fi
  if (cd "$work" && go test -count=1 -timeout 5m -run "$run" "$pkg" >"$work/out.txt" 2>&1); then
    echo "SURVIVED #$n $file: '$from' -> '$to' (go test -run '$run' $pkg passed)"
    survived=$((survived + 1))
  else
    echo "caught   #$n $file: '$from' -> '$to'"
    caught=$((caught + 1))
  fi
  mv "$work/$file.orig" "$work/$file"
done <"$list"
echo "mutants: $caught of $n caught, $survived survived"
[[ $survived -eq 0 ]]
