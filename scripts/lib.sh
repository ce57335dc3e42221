# Shared by scripts/run and scripts/test (source it; not executable on its own).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${LEADSCORE_CACHE_DIR:-$REPO_ROOT/.cache}"
VENV="$REPO_ROOT/.venv"
PYTHON="${PYTHON:-python3}"

die() { printf '%s\n' "$(basename "$0"): ERROR: $*" >&2; exit 1; }
say() { printf '%s\n' "$(basename "$0"): $*" >&2; }

# ensure_venv: create .venv if missing and `pip install -e '.[dev]'`; the install is repeated
# only when pyproject.toml changed since the last one (stamp in the cache dir).
ensure_venv() {
    if [[ ! -x $VENV/bin/python ]]; then
        command -v "$PYTHON" >/dev/null || die "$PYTHON not found (need Python 3.11+)"
        say "creating $VENV"
        "$PYTHON" -m venv "$VENV" \
            || die "'$PYTHON -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv"
    fi
    mkdir -p "$CACHE_DIR"
    local stamp="$CACHE_DIR/pip-install.stamp"
    # What the installed environment depends on: the pyproject, this venv (recreated => new
    # pyvenv.cfg mtime) and this checkout.
    local want
    want="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1) $(stat -c %Y "$VENV/pyvenv.cfg") $REPO_ROOT"
    if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
        say "pip install -e '.[dev]' (first run or pyproject.toml changed; log: $CACHE_DIR/pip-install.log)"
        if ! (cd "$REPO_ROOT" && "$VENV/bin/python" -m pip install -q -e '.[dev]') \
                >"$CACHE_DIR/pip-install.log" 2>&1; then
            tail -n 40 "$CACHE_DIR/pip-install.log" >&2
            die "pip install failed (full output in $CACHE_DIR/pip-install.log)"
        fi
        echo "$want" > "$stamp"
    fi
    ensure_native
}

# ensure_native: build and install the Rust core (native/, module leadscore_core) with
# maturin through pip; rebuilt only when a file under native/ (but target/) changed.
ensure_native() {
    if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null \
        || die "cargo not found: the native core needs Rust 1.82+ (https://rustup.rs)"
    local stamp="$CACHE_DIR/native-install.stamp" want
    want="$(cd "$REPO_ROOT/native" && find . -path ./target -prune -o -type f -print0 \
        | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1) $(stat -c %Y "$VENV/pyvenv.cfg")"
    if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
        say "building the native core (native/, cargo + maturin; log: $CACHE_DIR/native-install.log)"
        if ! "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$REPO_ROOT/native" \
                >"$CACHE_DIR/native-install.log" 2>&1; then
            tail -n 40 "$CACHE_DIR/native-install.log" >&2
            die "building the native core failed (full output in $CACHE_DIR/native-install.log)"
        fi
        echo "$want" > "$stamp"
    fi
}
