"""Experiments: `/experiments`, and their runs (`/experiments/{id}/runs`): created (and, unless
the server runs none, started in the background), read, cancelled, their status and logs."""
from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from ...listing import parse_list_query
from ...schemas import EXPERIMENT, EXPERIMENT_RUN
from .. import deps
from ..deps import BASE, json_body, json_response, list_params, listing, location, write
from .collection import add_collection

router = APIRouter()

RUNS = f"{BASE}/experiments/{{experiment_id}}/runs"


@router.get(RUNS)
async def list_runs(request: Request, experiment_id: str) -> Response:
    caller, registry = deps.caller(request), deps.registry(request)
    query = parse_list_query(EXPERIMENT_RUN, list_params(request))
    return listing(request, EXPERIMENT_RUN, registry.list_runs(caller, experiment_id, query))


@router.post(RUNS + "/{run_id}/cancel",
             summary="Cancel an experiment run (an extension of the Sensei contract)",
             description="Stops a PENDING or RUNNING run, whichever process runs it: a queued "
                         "run leaves the queue, a running run's worker process group is stopped "
                         "(SIGTERM, then SIGKILL after 3 s), a Ray job is stopped. The run ends "
                         "ABORTED with the reason in its status message, and the files it wrote "
                         "in its run folder (all but its log) are removed. Answers the run's "
                         "status once it has ended (waiting up to 5 s; a run still ending then "
                         "is answered as it is). A run that already ended is a 409.",
             responses={200: {"description": "The run's status after the cancel"}})
async def cancel_run(request: Request, experiment_id: str, run_id: str) -> Response:
    caller, registry = deps.caller(request), deps.registry(request)
    executor = deps.executor(request)
    registry.get_run(caller, experiment_id, run_id)   # 404 unless it is this experiment's
    user = caller.user_id
    if executor is None:   # --no-execute: nothing runs, the run only changes state
        await write(registry.abort_unowned_run, caller, run_id, f"cancelled by {user}")
    else:
        await write(executor.cancel, caller, run_id, f"cancelled by {user} through the API")
        await run_in_threadpool(executor.wait_ended, caller, run_id, 5.0)
    return json_response(registry.run_status(caller, experiment_id, run_id),
                         "experimentRunStatus.v1.json")


@router.post(RUNS, status_code=201)
async def create_run(request: Request, experiment_id: str) -> Response:
    from ...runs import RecordOnly, RunRequest

    caller, executor = deps.caller(request), deps.executor(request)
    body = await json_body(request)
    # The run path (runtime.runs) validates and prepares it once (a run this host can never
    # start is a 400), creates it and runs it in the background, in posting order.
    runs = executor if executor is not None else RecordOnly(deps.registry(request))
    doc = await write(runs.start, caller, RunRequest.from_body(experiment_id, body))
    return json_response(doc, EXPERIMENT_RUN.profile, 201,
                         location(request, f"{BASE}/experiments/{experiment_id}/runs/{doc['id']}"))


@router.get(RUNS + "/{run_id}")
async def get_run(request: Request, experiment_id: str, run_id: str) -> Response:
    caller, registry = deps.caller(request), deps.registry(request)
    return json_response(registry.get_run(caller, experiment_id, run_id), EXPERIMENT_RUN.profile)


@router.get(RUNS + "/{run_id}/logs/{name}")
async def run_log(request: Request, experiment_id: str, run_id: str, name: str) -> Response:
    caller, registry = deps.caller(request), deps.registry(request)
    path = registry.run_log(caller, experiment_id, run_id, name)
    return FileResponse(path, media_type="text/plain; charset=utf-8")


@router.get(RUNS + "/{run_id}/status")
async def run_status(request: Request, experiment_id: str, run_id: str) -> Response:
    caller, registry = deps.caller(request), deps.registry(request)
    return json_response(registry.run_status(caller, experiment_id, run_id),
                         "experimentRunStatus.v1.json")


add_collection(router, EXPERIMENT, bulk_delete="mlInstanceId")
