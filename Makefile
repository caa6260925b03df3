# The README's commands. `make setup` once, then `make demo` or `make test`.
.PHONY: setup demo test nextflow

VENV ?= .venv

setup:
	./scripts/setup.sh

demo:
	$(VENV)/bin/samplerflow run --input assets/demo/samplesheet.csv --outdir results/demo

# Installs Nextflow from Maven Central into .nextflow-dist (once) so the
# pipeline tests run the real Nextflow; they skip when Java or Maven is missing.
nextflow:
	./scripts/install_nextflow.sh .nextflow-dist || echo "Nextflow install failed: pipeline tests will be skipped"

test: nextflow
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python -m pytest
