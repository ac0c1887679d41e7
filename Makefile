# Set-up and entry points. Every target creates .venv and installs requirements.txt when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

.PHONY: demo test install
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) main.py --config-file configs/DCMHT/synthetic.yaml --save-dir runs/demo

test: $(VENV)/.installed
	$(PY) -m pytest
