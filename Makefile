# The two commands of README.md. Everything they create lives under .local/ (ignored).
.PHONY: demo test airflow clean

demo:  ## run the demo loop end to end and print a summary
	./scripts/demo.sh

test:  ## install what the tests need, lint, type-check, run all tests
	./scripts/test.sh

airflow:  ## open the Airflow UI on the demo's data (airflow standalone)
	./scripts/airflow.sh standalone

clean:  ## remove everything the commands created
	rm -rf .local
