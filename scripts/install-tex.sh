#!/usr/bin/env bash
# Install the TeX the paper needs (Debian/Ubuntu, as root): latexmk and the TeX Live sets the
# template uses, plus poppler-utils for looking at pages (pdftoppm). Used by `make paper` when TeX
# is missing and by .ci/run. Prints the command instead when it cannot run it.
set -euo pipefail
PACKAGES=(latexmk texlive-latex-recommended texlive-fonts-recommended texlive-latex-extra
  texlive-pictures poppler-utils)
if command -v latexmk >/dev/null 2>&1; then
  exit 0
fi
if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "TeX is missing; install it with (as root, Debian/Ubuntu):" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends ${PACKAGES[*]}" >&2
  exit 1
fi
echo "[echomtl setup] installing TeX with apt-get (${PACKAGES[*]}; a few minutes)" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" \
  >/dev/null
