# Convenience targets; the README's two commands are scripts/demo.sh and scripts/test.sh.
.PHONY: setup demo test lint lab-up lab-down
setup:
	bash scripts/bootstrap.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
lint:
	bash scripts/lint.sh
lab-up:
	.venv/bin/mailfleet lab up
lab-down:
	.venv/bin/mailfleet lab down
