#!/usr/bin/env bash
# Builds the library and the command line for bin/fabric-ckpt and the tests, incrementally: Maven
# (java/pom.xml) runs the set-up, the CMake build of the C++ core and JavaCPP, and writes
# build/classpath.txt; cli/pom.xml compiles the command line and writes build/cli/classpath.txt.
#   scripts/build.sh           the main job: no GoogleTest, no Python environment
#   scripts/build.sh --tests   also the GoogleTest suites (and the tests' set-up)
# `mvn install` at the top builds and installs every artifact instead (see README).
set -euo pipefail
source "$(dirname "$0")/env.sh"
tests=OFF
case "${1:-}" in
  --tests) tests=ON ;;
  "") ;;
  *) echo "usage: scripts/build.sh [--tests]" >&2; exit 2 ;;
esac
command -v mvn >/dev/null && command -v javac >/dev/null || bash "$ROOT/scripts/setup.sh"
# The library (java), its platform artifact and the command line (cli); the CLI's runnable jar is
# left to `mvn install` (shading the preset's jars takes long and bin/fabric-ckpt does not need it).
(cd "$ROOT" && mvn -B -q -Dstyle.color=never -pl java,platform,cli -Dfabricckpt.build.dir="$BUILD_DIR" \
   -Dfabricckpt.tests="$tests" -Dfabricckpt.python="$VENV/bin/python" -Dfabricckpt.shade.skip=true \
   -DskipTests -Dmaven.javadoc.skip=true -Dmaven.source.skip=true package)
