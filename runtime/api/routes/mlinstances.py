"""MLInstances: `/mlInstances`, the generic collection; `DELETE ?engineId=` deletes an Engine's."""
from __future__ import annotations

from fastapi import APIRouter

from ...schemas import MLINSTANCE
from .collection import add_collection

router = APIRouter()

add_collection(router, MLINSTANCE, bulk_delete="engineId")
