#!/bin/bash
# Runs on the build host: the third-party modules bakery-node needs that the image's
# Debian 12 lacks or ships too old (pydantic 2, cryptography 44+; Debian: 1.10 and 38),
# as wheels for the image's CPython 3.11 unpacked into LIB (pip --target). EXTRA adds the
# cloud's store client: boto3 on AWS, google-cloud-storage on GCP.
# Inputs (environment): LIB, EXTRA (space-separated requirements, may be empty).
set -euo pipefail
: "${LIB:?}"
rm -rf "$LIB"
# shellcheck disable=SC2086  # EXTRA is a list of requirements
python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --no-compile --target "$LIB" \
  --python-version 3.11 --implementation cp --only-binary=:all: \
  --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  'pydantic>=2.6,<3' 'cryptography>=44' ${EXTRA:-}
