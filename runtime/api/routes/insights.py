"""Insights: `/insights` (listed, created, read; never replaced or deleted) and the default
metrics of an algorithm."""
from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ...schemas import INSIGHT
from .. import deps
from ..deps import BASE, json_response
from .collection import add_collection

router = APIRouter()


# A fixed path first, so that it is not read as an id.
@router.get(f"{BASE}/insights/metrics")
async def insight_metrics(request: Request) -> Response:
    deps.caller(request)
    return json_response(deps.registry(request).default_metrics(
        request.query_params.get("algorithm")), "defaultMetricsListing.v1.json")


add_collection(router, INSIGHT, update=False, delete=False)
