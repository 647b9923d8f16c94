# Shortcuts for the scripts in scripts/ (the README's two commands are the scripts).
PYTHON ?= .venv/bin/python

.PHONY: demo test dashboards
demo:
	./scripts/demo.sh

test:
	./scripts/test.sh

# Regenerates dashboards/*.json and prometheus/rules/taskiq.rules.yml from
# dashboards/ (thresholds in dashboards/config.py); commit the result.
dashboards:
	$(PYTHON) -m dashboards
