#!/bin/sh
# Runs the Python SDK's unit tests natively, with the template's and the Slack plugin's: in
# the virtual environment .venv (created, with componentize-py, when there is none; PYTHON=...
# picks the interpreter). componentize-py generates the contract's bindings the tests import.
#
#   sh test.sh                    # every test
#   CANOPY_BLESS=1 sh test.sh     # also rewrites plugins/slack/tests/expected/
set -eu

cd "$(dirname "$0")"
# No __pycache__ beside the SDK's sources: they are inputs of the components' builds.
export PYTHONDONTWRITEBYTECODE=1
VENV=.venv
STAMP=$VENV/requirements.stamp

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
    rm -f "$STAMP"
fi
if [ ! -f "$STAMP" ] || [ -n "$(find test.sh -newer "$STAMP")" ]; then
    "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet componentize-py==0.25.1
    touch "$STAMP"
fi

exec "$VENV/bin/python" - <<'PYTHON'
import sys
import unittest

suite = unittest.defaultTestLoader.discover("tests", top_level_dir="tests")
result = unittest.TextTestRunner(verbosity=2).run(suite)
failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
passed = result.testsRun - failed - len(result.skipped)
print(f"{passed} passed, {failed} failed, {len(result.skipped)} skipped")
sys.exit(0 if result.wasSuccessful() else 1)
PYTHON
