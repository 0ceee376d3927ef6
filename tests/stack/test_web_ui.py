"""The web UI as a person uses it, in Debian's chromium driven by Playwright, against a
real deployment whose UI asks for a login (airflow_stack_login): sign in, open the
trigger form of each DAG of one dataset (``stack_web_ui``) and check its fields, trigger
training with a model type chosen from the form's dropdown, wait for the run (REST),
open the finished train task's page and follow its MLflow link to a page that answers
200.

Screenshots of every step go to ``.local/test-artifacts/browser/`` (or
``$MLOPS_LOOP_TEST_ARTIFACTS/browser/``), emptied at the start; a failure saves one of the
page as it was and names the folder. Skipped, with the reason, without the ``playwright``
package or ``/usr/bin/chromium`` (scripts/test.sh installs Debian's ``chromium``).
Playwright never downloads a browser here: it launches that executable.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.fixtures import missing

pytestmark = [pytest.mark.browser, pytest.mark.stack, pytest.mark.integration, pytest.mark.docker]

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    missing(
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium "
        "chromium-driver; scripts/test.sh does as root)",
        module_level=True,
    )
try:
    from playwright import sync_api
except ImportError:
    missing(
        "the playwright package is missing: install the project's dev extra "
        "(pip install -e '.[dev]' -c constraints.txt)",
        module_level=True,
    )

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = (
    Path(os.environ.get("MLOPS_LOOP_TEST_ARTIFACTS") or REPO / ".local" / "test-artifacts")
    / "browser"
)
# Headless on a closed network as root: no sandbox, GPU, QUIC or background fetches.
# Playwright adds --headless and a fresh --user-data-dir of its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

DATASET = "stack_web_ui"
MODEL = f"{DATASET}_model"
DAGS = {stage: f"mlops_{stage}__{DATASET}" for stage in ("ingest", "train", "drift", "rollback")}
TRAIN = DAGS["train"]
DAYS = ["2026-07-01", "2026-07-02", "2026-07-03"]
# The config says mlp; the form's dropdown picks hist_gradient_boosting (the fastest),
# so the MLflow run's model_type tells that the choice reached the trainer.
CHOSEN_MODEL_TYPE = "hist_gradient_boosting"
OVERRIDES = {
    "training": {"model_type": "mlp", "hist_gradient_boosting": {"max_iter": 20}},
}
# Each trigger form: {param: its title}. The UI renders each param as #element_<param>.
# Train last: its form stays open for the trigger.
FORM_FIELDS = {
    "ingest": {"ds": "Date to (re-)ingest"},
    "drift": {"ds": "Report date", "start": "Window start", "end": "Window end"},
    "rollback": {"reason": "Reason", "to_version": "Target version", "force": "Force"},
    "train": {
        "model_type": "Model type",
        "hyperparameters": "Hyperparameter overrides",
        "until_ds": "Train on validated data up to",
        "reason": "Reason",
    },
}
UI_TIMEOUT_MS = 30_000


class Browser:
    """One page of a headless chromium, with numbered screenshots in ``folder``."""

    def __init__(self, page: Any, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.shots: list[Path] = []

    def shot(self, name: str, page: Any = None) -> Path:
        """Save a screenshot of ``page`` (default: this one) as ``NN-name.png``."""
        path = self.folder / f"{len(self.shots) + 1:02d}-{name}.png"
        (page or self.page).screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path

    def failure(self) -> None:
        """Keep the page as it is now: a screenshot and its HTML."""
        path = self.shot("failure")
        path.with_suffix(".html").write_text(self.page.content(), encoding="utf-8")

    def where(self) -> str:
        """For assertion messages: the page's URL and where the screenshots are."""
        return f"(page {self.page.url}; screenshots in {self.folder})"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = chromium.new_context(viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(UI_TIMEOUT_MS)
            yield Browser(context.new_page(), ARTIFACTS)
        finally:
            chromium.close()


def sign_in(ui: Browser, url: str, username: str, password: str) -> None:
    page = ui.page
    page.goto(url + "/")
    page.get_by_text("Sign into Airflow").wait_for()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    ui.shot("login-form")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda u: "/auth/" not in u)
    page.get_by_role("link", name="Dags").first.wait_for()
    ui.shot("signed-in")


def open_trigger_form(ui: Browser, url: str, dag_id: str) -> Any:
    """The DAG's page, then its Trigger button: returns the form's dialog."""
    page = ui.page
    page.goto(f"{url}/dags/{quote(dag_id)}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(f"Trigger Dag - {dag_id}").wait_for()
    return dialog


def test_sign_in_trigger_forms_train_and_follow_the_mlflow_link(airflow_stack_login, browser):
    import mlflow

    stack = airflow_stack_login
    airflow = stack.airflow
    assert stack.login is not None
    timings: dict[str, float] = {}
    started = time.monotonic()

    def lap(step: str) -> None:
        timings[step] = round(time.monotonic() - started - sum(timings.values()), 1)

    stack.add_dataset(DATASET, OVERRIDES)
    stack.validated_days(DATASET, DAYS)
    lap("dataset")

    ui = browser
    page = ui.page
    try:
        # The UI asks for a login (no all-admins shortcut on this deployment).
        sign_in(ui, airflow.url, stack.login.username, stack.login.password)
        lap("sign in")

        # Each DAG's trigger form shows its fields; nothing is triggered from these.
        for stage, fields in FORM_FIELDS.items():
            dialog = open_trigger_form(ui, airflow.url, DAGS[stage])
            for param, title in fields.items():
                # Inputs and editors carry the id; a switch only names its input.
                field = dialog.locator(f"#element_{param}, [name=element_{param}]")
                assert field.count() >= 1, f"{stage} form has no field {param!r} {ui.where()}"
                # The label holds the title (and a "*" when the field is required).
                assert dialog.locator("label", has_text=title).count() >= 1, (
                    f"{stage} form has no label {title!r} {ui.where()}"
                )
            ui.shot(f"{stage}-form")
            if stage != "train":
                page.keyboard.press("Escape")
                dialog.wait_for(state="hidden")
        lap("forms")

        # Train: the model type from the dropdown, a reason, then Trigger.
        dialog = page.get_by_role("dialog")
        dialog.locator("#element_model_type").click()
        options = page.get_by_role("option").all_inner_texts()
        assert options == ["As configured (training.model_type)", "mlp", CHOSEN_MODEL_TYPE], (
            f"model type options {options} {ui.where()}"
        )
        page.get_by_role("option", name=CHOSEN_MODEL_TYPE, exact=True).click()
        assert dialog.locator("input[name=element_model_type]").input_value() == (
            CHOSEN_MODEL_TYPE
        ), ui.where()
        dialog.locator("#element_reason").fill("browser test")
        ui.shot("train-form-filled")
        before = time.monotonic()
        dialog.get_by_role("button", name="Trigger", exact=True).click()
        dialog.wait_for(state="hidden")
        lap("trigger")
    except BaseException:
        ui.failure()
        raise

    # The run the form created, awaited through REST.
    runs: list[dict[str, Any]] = []
    while not runs and time.monotonic() - before < 60:
        runs = airflow.api("GET", f"/dags/{TRAIN}/dagRuns")["dag_runs"]
        time.sleep(0.5)
    assert len(runs) == 1, f"runs of {TRAIN} after the UI trigger: {runs}"
    run = runs[0]
    run_id = run["dag_run_id"]
    assert run["run_type"] == "manual", run
    assert run["conf"]["model_type"] == CHOSEN_MODEL_TYPE, run["conf"]
    assert run["conf"]["reason"] == "browser test", run["conf"]
    finished = airflow.wait_for_run(TRAIN, run_id, timeout=600)
    states = airflow.task_states(TRAIN, run_id)
    assert finished["state"] == "success", states
    assert states["train_challenger"] == "success", states
    lap("train run")

    train = airflow.xcom(TRAIN, run_id, "train_challenger")
    client = mlflow.MlflowClient(tracking_uri=stack.mlflow_url)
    version = client.get_model_version(MODEL, train["model_version"])
    assert client.get_run(version.run_id).data.params["model_type"] == CHOSEN_MODEL_TYPE
    expected_link = f"{stack.mlflow_url}/#/models/{MODEL}/versions/{version.version}"

    try:
        # The finished task's page, the MLflow link in its Details tab (Extra Links), and
        # where the link leads.
        task_page = f"{airflow.url}/dags/{quote(TRAIN)}/runs/{quote(run_id)}/tasks/train_challenger"
        page.goto(task_page)
        page.get_by_text("DockerTrainOperator").first.wait_for()
        ui.shot("train-task")
        page.goto(f"{task_page}/details")
        link = page.get_by_role("link", name="MLflow model version")
        link.wait_for()
        href = link.get_attribute("href")
        assert href == expected_link, f"link {href!r} {ui.where()}"
        ui.shot("train-task-details")
        # The document answers of every page the link opens (a new tab or this one).
        documents: list[Any] = []
        page.context.on(
            "response",
            lambda r: documents.append(r) if r.request.resource_type == "document" else None,
        )
        with page.context.expect_page() as opened:
            link.click()
        mlflow_page = opened.value
        mlflow_page.wait_for_load_state()
        mlflow_page.get_by_text(MODEL).first.wait_for()
        ui.shot("mlflow-model-version", mlflow_page)
        lap("task page and link")
    except BaseException:
        ui.failure()
        raise
    answers = [(r.url, r.status) for r in documents]
    assert answers and answers[0][0].startswith(stack.mlflow_url), answers
    assert all(status == 200 for _, status in answers), answers
    print(f"browser test timings (s): {timings}; screenshots in {ARTIFACTS}")
