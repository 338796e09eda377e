#!/usr/bin/env bash
# Build the prostseg book into _build/html, executing every chapter notebook.
#
# Usage (from anywhere; after `pip install -e .`):
#
#     book/build.sh            # build _build/html
#     book/build.sh --all      # extra arguments go to `jupyter-book build`
#
# Environment:
#     PYTHON   the Python that has prostseg and jupyter-book installed
#              (default: .venv/bin/python when it exists, else python3)
#
# Steps:
# 1. Offline assets. The rendered pages need require.js, the ipywidgets HTML manager and
#    MathJax. Instead of loading them from CDNs, the book serves its own copies: the npm
#    versions pinned in book/package-lock.json are installed (only when the lock file
#    changed) and the files the pages use are copied to book/_static_offline/ (gitignored),
#    which _config.yml hands to Sphinx as a static folder.
# 2. Kernel settings. The chapters run in kernels configured by book/ipython_kernel_config.py
#    (native library logs stay in this script's output instead of the pages; inline figures
#    record their smallest text), copied into a private IPython directory, _build/ipython,
#    with COLUMNS set to the characters one line of a cell shows on the page.
# 3. `jupyter-book build . -W -n --keep-going`: every warning is an error, and a failing
#    notebook fails the build (exit status non-zero) instead of rendering a traceback.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if [[ -n "${PYTHON:-}" ]]; then
    python="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    python=.venv/bin/python
else
    python=python3
fi

assets=book/_static_offline
lock_hash="$(sha256sum book/package-lock.json book/build.sh | sha256sum | cut -d' ' -f1)"

install_assets() {
    command -v npm >/dev/null || {
        echo "book/build.sh: npm not found: install Node.js (>= 18) to fetch the book's offline JavaScript" >&2
        exit 1
    }
    local staging
    staging="$(mktemp -d)"
    trap 'rm -rf "$staging"' EXIT
    cp book/package.json book/package-lock.json "$staging/"
    echo "book/build.sh: installing pinned offline assets (npm ci)"
    npm ci --prefix "$staging" --ignore-scripts --no-audit --no-fund --loglevel=error
    local modules="$staging/node_modules" site="$staging/site"
    mkdir -p "$site/requirejs" "$site/html-manager" "$site/mathjax"
    cp "$modules/requirejs/require.js" "$site/requirejs/"
    # embed-amd.js finds its fonts next to itself (webpack public path = its own URL).
    cp "$modules/@jupyter-widgets/html-manager/dist/embed-amd.js" "$site/html-manager/"
    find "$modules/@jupyter-widgets/html-manager/dist" -maxdepth 1 \
        \( -name '*.woff' -o -name '*.woff2' -o -name '*.ttf' -o -name '*.eot' -o -name '*.svg' \) \
        -exec cp {} "$site/html-manager/" \;
    # MathJax 3, the version Sphinx 7 configures: the combined tex-mml-chtml component plus
    # the folders it loads on demand (TeX extensions, fonts, menu, accessibility).
    mkdir -p "$site/mathjax/es5"
    cp "$modules/mathjax/es5/tex-mml-chtml.js" "$site/mathjax/es5/"
    cp -r "$modules/mathjax/es5/"{a11y,adaptors,input,output,sre,ui} "$site/mathjax/es5/"
    cp "$modules/mathjax/LICENSE" "$site/mathjax/"  # the other two carry theirs in the .js
    rm -rf "$assets"
    mkdir -p "$assets"
    mv "$site" "$assets/site"
    echo "$lock_hash" >"$assets/lock.sha256"
    rm -rf "$staging"
    trap - EXIT
}

if [[ "$(cat "$assets/lock.sha256" 2>/dev/null)" != "$lock_hash" ]]; then
    install_assets
fi

export IPYTHONDIR="$repo_root/_build/ipython"
mkdir -p "$IPYTHONDIR/profile_default"
cp book/ipython_kernel_config.py "$IPYTHONDIR/profile_default/ipython_kernel_config.py"
# What formats itself for a terminal (argparse help in chapter 12) formats for one line of
# a cell on the page: 75 characters in a 1280 px wide window (tests/test_book_site.py).
export COLUMNS=75

echo "book/build.sh: building with $python"
exec "$python" -c 'import sys; from jupyter_book.cli.main import main; sys.argv[0] = "jupyter-book"; main()' \
    build . --builder html -W -n --keep-going "$@"
