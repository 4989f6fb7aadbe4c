"""MLServices: `/mlServices`, answered with their status, and the actions on their schedules
(pause, resume, trainNow, scoreNow: extensions of the contract; runtime.mlservices and
runtime.scheduler do the work)."""
from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter, Request
from starlette.responses import Response

from ...mlservices import ServiceDesk
from ...schemas import MLSERVICE
from ...registry import Caller
from .. import deps
from ..deps import BASE, json_response, write
from .collection import add_collection

router = APIRouter()

SERVICE = f"{BASE}/mlServices/{{id}}"


def _service_action(name: str, summary: str, description: str,
                    action: Callable[[ServiceDesk, Caller, str], Any]) -> None:
    @router.post(f"{SERVICE}/{name}", name=f"{name}_mlService", summary=summary,
                 description=description,
                 responses={200: {"description": "The MLService with its status"}})
    async def act(request: Request, id: str) -> Response:
        caller, registry = deps.caller(request), deps.registry(request)
        doc = await write(action, ServiceDesk(registry), caller, id)
        return json_response(doc, MLSERVICE.profile)


_service_action("pause", "Pause an MLService's schedules (an extension of the contract)",
                "Fires of a paused MLService start no run; they are recorded as skipped in "
                "its status.", ServiceDesk.pause)
_service_action("resume", "Resume an MLService's schedules (an extension of the contract)",
                "The next fire after now runs; fires skipped while paused are not made up.",
                ServiceDesk.resume)
for _task in ("train", "score"):
    _service_action(f"{_task}Now", f"Fire an MLService's {_task} schedule now (an extension "
                    "of the contract)", f"The scheduler of this server starts the {_task} run "
                    "at its next tick, through the same path as a scheduled fire; the "
                    "regular next fire is kept.",
                    lambda desk, caller, id, task=_task: desk.run_now(caller, id, task))

add_collection(router, MLSERVICE, bulk_delete="mlInstanceId",
               view=lambda registry, caller, doc: ServiceDesk(registry).with_status(caller.scope,
                                                                                    doc))
