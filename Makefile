# Thin entry points; the logic lives in scripts/ and in qatc itself.
SHELL := /bin/bash
.PHONY: demo test setup

setup:
	@bash scripts/setup-libtorch.sh >/dev/null && bash scripts/setup-data.sh >/dev/null

demo:
	@bash scripts/demo.sh

test:
	@bash scripts/test.sh
