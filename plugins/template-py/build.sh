#!/bin/sh
# Builds this plugin into dist/$NAME.wasm, in one command from any directory:
#
#   sh build.sh
#
# - creates the virtual environment .venv (python3 -m venv; PYTHON=... picks another
#   interpreter) when there is none;
# - installs requirements.txt into it (componentize-py and Canopy's Python SDK) when
#   requirements.txt, or a local directory it names (the SDK), changed since the last
#   install;
# - builds the component with `python -m canopy_plugin_sdk.build`, which does nothing when
#   the component is newer than every input.
set -eu

NAME=template-py
APP=app

cd "$(dirname "$0")"
VENV=.venv
STAMP=$VENV/requirements.stamp

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
    rm -f "$STAMP"
fi

# Prints a line for each local directory requirements.txt installs from (a line that is a
# path, such as the SDK's) with a file newer than the last install.
changed_local_requirements() {
    sed -e 's/#.*//' requirements.txt | while read -r line; do
        case $line in
            /* | ./* | ../*)
                if [ -d "$line" ]; then
                    find -L "$line" -newer "$STAMP" -type f \
                        ! -path '*/__pycache__/*' ! -path '*/tests/*' ! -path '*/.venv/*' | head -n 1
                fi
                ;;
        esac
    done
}

stale() {
    [ ! -f "$STAMP" ] ||
        [ -n "$(find requirements.txt -newer "$STAMP")" ] ||
        [ -n "$(changed_local_requirements)" ]
}

if stale; then
    echo "installing requirements.txt into $VENV"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -r requirements.txt
    touch "$STAMP"
fi

exec "$VENV/bin/python" -m canopy_plugin_sdk.build "$APP" "dist/$NAME.wasm"
