#!/usr/bin/env bash
# Installs the headless browser that tests/test_app.py's `browser` test drives: Chromium and its WebDriver
# (chromedriver), from the Debian/Ubuntu packages. Safe to run again: it installs only what is missing.
#
#   scripts/install_browser.sh            # then: python -m pytest tests/test_app.py
#
# Without root it uses sudo. Set MOLECLIP_SKIP_BROWSER=1 instead to skip the browser test knowingly.
set -euo pipefail

if [ "${MOLECLIP_SKIP_BROWSER:-}" = "1" ]; then  # the browser test is skipped knowingly: nothing to install
    echo "install_browser: MOLECLIP_SKIP_BROWSER=1: not installing; the app's browser test will be skipped"
    exit 0
fi

found() {  # the first of the given commands that is on PATH
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

browser=$(found chromium chromium-browser google-chrome || true)
driver=$(found chromedriver || true)
if [ -n "$browser" ] && [ -n "$driver" ]; then
    echo "install_browser: nothing to do: browser $browser, driver $driver"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: apt-get not found; install Chromium and chromedriver with your system's package manager" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install_browser: not root and no sudo: run as root: apt-get install -y chromium chromium-driver" >&2
    exit 1
fi

# Debian names the packages chromium and chromium-driver; Ubuntu ships chromium-browser and
# chromium-chromedriver (snap wrappers on recent releases). Install whichever names the package lists know.
packages=()
missing=()
[ -n "$browser" ] || missing+=("a Chromium browser")
[ -n "$driver" ] || missing+=("chromedriver")
echo "install_browser: missing ${missing[*]}; updating the package lists"
"${as_root[@]}" apt-get update -qq
for pair in "chromium chromium-driver" "chromium-browser chromium-chromedriver"; do
    set -- $pair
    if apt-cache show "$1" >/dev/null 2>&1 && apt-cache show "$2" >/dev/null 2>&1; then
        packages=("$1" "$2")
        break
    fi
done
if [ ${#packages[@]} -eq 0 ]; then
    echo "install_browser: no Chromium packages known to apt (tried chromium/chromium-driver and" \
         "chromium-browser/chromium-chromedriver)" >&2
    exit 1
fi
echo "install_browser: installing ${packages[*]}"
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"

browser=$(found chromium chromium-browser google-chrome || true)
driver=$(found chromedriver || true)
if [ -z "$browser" ] || [ -z "$driver" ]; then
    echo "install_browser: installed ${packages[*]} but the browser or chromedriver is still not on PATH" >&2
    exit 1
fi
echo "install_browser: installed ${packages[*]}: browser $browser ($("$browser" --version 2>/dev/null || true)), driver $driver"
