# The commands of README.md (bench and bench-quick: benchmarks/run_all.py). Everything they create lives under .local/ (ignored).
.PHONY: demo test airflow bench bench-quick clean

PYTHON ?= .local/venv/bin/python
BENCH_ARGS ?=

demo:  ## run the demo loop end to end and print a summary
	./scripts/demo.sh

test:  ## install what the tests need, lint, type-check, run all tests
	./scripts/test.sh

airflow:  ## open the Airflow UI on the demo's data (airflow standalone)
	./scripts/airflow.sh standalone

bench:  ## run every benchmark, rewrite the tables in docs/benchmarks.md (BENCH_ARGS="--only drift,loop")
	$(PYTHON) benchmarks/run_all.py $(BENCH_ARGS)

bench-quick:  ## CI-sized benchmark runs, written to .local/bench/benchmarks-quick.md (not the docs)
	$(PYTHON) benchmarks/run_all.py --quick $(BENCH_ARGS)

clean:  ## remove everything the commands created
	rm -rf .local
