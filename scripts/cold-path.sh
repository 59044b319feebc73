#!/usr/bin/env bash
# Proves the cold path, as a new user meets it: from a fresh clone of the committed HEAD in a
# temporary folder, with an EMPTY cache folder for the project (XDG_CACHE_HOME; pip's and Maven's
# download caches are reused so that this stays fast):
#   1. the main job, `bin/fabric-ckpt demo` (set-up included): must succeed on its first run and
#      add at most 1.5 GB under the project's cache folder;
#   2. `mvn install` of the clone (tests skipped: bin/run-tests ran them) into a local Maven repository of its own; every shipped library's
#      RUNPATH must be $ORIGIN only, and no binary may name a path of the build machine;
#   3. the clone's build folder deleted, the example consumer (examples/consumer, a copy outside the
#      clone) built against that repository alone and checked by pytest with Lightning's fabric.load;
#   4. the runnable CLI jar from that repository answers --version and inspects the consumer's file.
# Prints the cold download size and time of each step. Needs the tests' Python environment (run by
# bin/run-tests after its own set-up).
set -euo pipefail
source "$(dirname "$0")/env.sh"
say() { printf '[cold] %s\n' "$*"; }
fail() { printf '[cold] FAILED: %s\n' "$*" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/fabric-ckpt-cold.XXXXXX")"
# FABRICCKPT_KEEP_COLD=1 keeps the folder; FABRICCKPT_M2_USER=/nonexistent starts Maven's repository empty too
[ "${FABRICCKPT_KEEP_COLD:-}" = 1 ] || trap 'rm -rf "$work"' EXIT
pip_cache="$(python3 -m pip cache dir 2>/dev/null || echo "$HOME/.cache/pip")"
m2_user="${FABRICCKPT_M2_USER:-$HOME/.m2/repository}"
test_python="$VENV/bin/python"   # the test harness' Python (this run's set-up made it)
[ -x "$test_python" ] || fail "no test Python environment at $VENV (run bin/run-tests)"

git clone -q "$ROOT" "$work/clone"
say "fresh clone of $(git -C "$work/clone" rev-parse --short HEAD) in $work/clone"
export XDG_CACHE_HOME="$work/cache" PIP_CACHE_DIR="$pip_cache"
mkdir -p "$XDG_CACHE_HOME"
unset FABRICCKPT_BUILD_DIR
cache="$XDG_CACHE_HOME/fabric-ckpt"

# A local Maven repository of its own: the user's downloads, hard-linked (nothing of fabric-ckpt in it).
mkdir -p "$work/m2"
if [ -d "$m2_user" ]; then
  cp -al "$m2_user/." "$work/m2/" 2>/dev/null || cp -a "$m2_user/." "$work/m2/"
  rm -rf "$work/m2/io/fabricckpt"
fi
m2_before=$(du -sm "$work/m2" | cut -f1)
export MAVEN_OPTS="${MAVEN_OPTS:-} -Dmaven.repo.local=$work/m2"

# 1. the main job, first run
start=$(date +%s)
(cd "$work/clone" && bin/fabric-ckpt demo "$work/demo") > "$work/demo.log" 2>&1 \
  || { tail -40 "$work/demo.log" >&2; fail "bin/fabric-ckpt demo failed on its first run"; }
grep -q "saved" "$work/demo.log" || fail "the demo saved no checkpoint"
demo_s=$(( $(date +%s) - start ))
cache_mb=$(du -sm "$cache" | cut -f1)
say "main job (set-up + build + demo): ${demo_s}s, ${cache_mb} MB under the project's cache folder," \
    "$(( $(du -sm "$work/m2" | cut -f1) - m2_before )) MB more in the Maven repository"
[ "$cache_mb" -le 1536 ] || fail "the main job's set-up put ${cache_mb} MB under $cache (at most 1536 MB)"
[ ! -d "$cache/venv" ] || fail "the main job created the tests' Python environment"

# 2. mvn install of the clone
start=$(date +%s)
(cd "$work/clone" && mvn -B -q -Dstyle.color=never -DskipTests install) > "$work/install.log" 2>&1 \
  || { tail -60 "$work/install.log" >&2; fail "mvn install of the clone failed"; }
say "mvn install: $(( $(date +%s) - start ))s; Maven repository now $(du -sm "$work/m2" | cut -f1) MB"
repo="$work/m2/io/fabricckpt"
version=$(sed -n 's|.*<version>\(.*\)</version>.*|\1|p' "$work/clone/pom.xml" | head -1)
for f in fabric-ckpt-parent/$version/fabric-ckpt-parent-$version.pom \
         fabric-ckpt/$version/fabric-ckpt-$version.jar fabric-ckpt/$version/fabric-ckpt-$version-linux-x86_64.jar \
         fabric-ckpt/$version/fabric-ckpt-$version-sources.jar fabric-ckpt/$version/fabric-ckpt-$version-javadoc.jar \
         fabric-ckpt-platform/$version/fabric-ckpt-platform-$version.jar fabric-ckpt-platform/$version/fabric-ckpt-platform-$version.pom \
         fabric-ckpt-cli/$version/fabric-ckpt-cli-$version.jar; do
  [ -f "$repo/$f" ] || fail "mvn install did not install $f"
done
mkdir "$work/natives" && (cd "$work/natives" && unzip -q "$repo/fabric-ckpt/$version/fabric-ckpt-$version-linux-x86_64.jar")
libs=$(find "$work/natives" -name '*.so*' -type f)
[ "$(echo "$libs" | grep -c .)" -ge 2 ] || fail "the natives jar lacks libfabricckpt.so or the JNI library: $libs"
for lib in $libs; do
  runpath=$(readelf -d "$lib" | sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]/\2/p')
  say "$(basename "$lib"): RUNPATH [$runpath]"
  [ "$runpath" = '$ORIGIN' ] || [ "$runpath" = '$ORIGIN/' ] || fail "$(basename "$lib") has RUNPATH [$runpath], not \$ORIGIN only"
  # Any home directory or this run's folders: what a binary must never name.
  build_paths="$work|$HOME/|/(root|home)/"
  if strings -a "$lib" | grep -E -q "$build_paths"; then
    fail "$(basename "$lib") names a path of the build machine: $(strings -a "$lib" | grep -E "$build_paths" | head -3)"
  fi
done
unzip -l "$repo/fabric-ckpt/$version/fabric-ckpt-$version.jar" | grep -q '\.so' && fail "the classes jar carries natives"
unzip -p "$repo/fabric-ckpt/$version/fabric-ckpt-$version.jar" META-INF/LICENSE | grep -q "Apache License" \
  || fail "the classes jar has no LICENSE"

# 3. the example consumer, with no build tree left
rm -rf "$work/clone/build"
cp -r "$work/clone/examples/consumer" "$work/consumer"
start=$(date +%s)
FABRICCKPT_CONSUMER_DIR="$work/consumer" FABRICCKPT_M2="$work/m2" \
  "$test_python" -m pytest -q -p no:cacheprovider "$work/consumer/test_consumer.py"
say "example consumer: $(( $(date +%s) - start ))s"

# 4. the runnable CLI jar
cli="$repo/fabric-ckpt-cli/$version/fabric-ckpt-cli-$version.jar"
java -jar "$cli" --version | grep -q "fabric-ckpt $version" || fail "java -jar fabric-ckpt-cli.jar --version"
ckpt=$(ls "$work"/demo/step-*.ckpt | tail -1)
java -jar "$cli" verify "$ckpt" >/dev/null || fail "java -jar fabric-ckpt-cli.jar verify $ckpt"
# The CLI's torch-free JNI library (inspect, verify, diff, convert, clean): RUNPATH $ORIGIN, no libtorch.
mkdir "$work/cli-natives" && (cd "$work/cli-natives" && unzip -q "$cli" 'io/fabricckpt/cli/format/*')
format_libs=$(find "$work/cli-natives" -name '*.so' -type f)
[ "$(echo "$format_libs" | grep -c .)" -ge 2 ] || fail "the CLI jar lacks the format JNI library: $format_libs"
for lib in $format_libs; do
  runpath=$(readelf -d "$lib" | sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]/\2/p')
  [ "$runpath" = '$ORIGIN' ] || [ "$runpath" = '$ORIGIN/' ] || fail "$(basename "$lib") has RUNPATH [$runpath], not \$ORIGIN only"
  readelf -d "$lib" | grep NEEDED | grep -E -q 'torch|c10' && fail "$(basename "$lib") needs libtorch: $(readelf -d "$lib" | grep NEEDED)"
done
say "runnable CLI jar ($(du -m "$cli" | cut -f1) MB): --version, verify OK; its format JNI library needs no libtorch"
say "passed"
