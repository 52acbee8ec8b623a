#!/usr/bin/env bash
# Refresh the YANG tree in README.md (between the yang-tree markers)
# from yang/escnc@*.yang with pyang.
set -euo pipefail
cd "$(dirname "$0")/.."
PYANG=${PYANG:-$(command -v pyang || echo .venv/bin/pyang)}
tree=$("$PYANG" -f tree -p yang yang/escnc@*.yang)
python3 - "$tree" <<'PY'
import re, sys
tree = sys.argv[1]
readme = open("README.md").read()
block = "<!-- yang-tree:begin -->\n```\n" + tree.rstrip("\n") + "\n```\n<!-- yang-tree:end -->"
readme = re.sub(r"<!-- yang-tree:begin -->.*?<!-- yang-tree:end -->", lambda _: block, readme, flags=re.S)
open("README.md", "w").write(readme)
PY
