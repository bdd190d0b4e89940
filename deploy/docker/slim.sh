#!/usr/bin/env bash
# Remove from a virtual environment what a runtime image never uses: test suites shipped inside packages, C/C++
# headers and static libraries (nothing is compiled in the image), torch's C++ test binaries and protoc, and
# Ray's Java jars (for Java workers; mlkube's are Python).
#   slim.sh /opt/venv
set -euo pipefail
VENV=${1:?usage: slim.sh VENV}
SITE=$(echo "$VENV"/lib/python3*/site-packages)
before=$(du -sm "$VENV" | cut -f1)
find "$SITE" -depth -type d \( -name tests -o -name testing_data \) \
  -not -path '*/torch/testing/*' -exec rm -rf {} +
find "$SITE" -name '*.a' -delete
rm -rf "$SITE"/torch/include "$SITE"/torch/share/cmake "$SITE"/pyarrow/include "$SITE"/ray/jars
find "$SITE"/torch/bin -type f -not -name torch_shm_manager -delete 2>/dev/null || true
echo "slim: $VENV ${before} MB -> $(du -sm "$VENV" | cut -f1) MB" >&2
