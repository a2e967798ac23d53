# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both run `setup` first; it is idempotent and quick when everything is already installed.
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint bench-embed clean-demo

setup:
	@# Fashion-MNIST offline: Debian's dataset-fashion-mnist where we are root on Debian; elsewhere the
	@# loaders fall back to data/ and then to torchvision's download.
	@# Chromium for the browser tests (tests/test_browser.py drives JupyterLab with Playwright): Debian's
	@# chromium package where we are root on Debian; elsewhere those tests are skipped with the reason.
	@pkgs=""; \
	[ -d /usr/share/datasets/fashion-mnist ] || pkgs="$$pkgs dataset-fashion-mnist"; \
	[ -x /usr/bin/chromium ] || pkgs="$$pkgs chromium"; \
	if [ -n "$$pkgs" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "setup: installing Debian packages$$pkgs"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkgs >/dev/null) \
		|| echo "setup: could not install$$pkgs (Fashion-MNIST is then downloaded; browser tests are skipped)"; \
	fi
	$(PYTHON) -m pip install -q -e ".[dev]"

demo: setup
	$(PYTHON) -m uslkit demo --overwrite

test: setup
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PYTHON) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint:
	$(PYTHON) -m ruff check uslkit tests benchmarks

bench-embed: setup
	$(PYTHON) benchmarks/bench_embed.py
