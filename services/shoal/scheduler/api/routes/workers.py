"""/api/v1/workers: the registered workers with their live load, and draining one."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from shoal.core.errors import NotFound
from shoal.scheduler.api import audit
from shoal.scheduler.api.deps import StoreDep
from shoal.scheduler.api.responses import JSONBytesResponse
from shoal.scheduler.schemas import ErrorPublic, WorkerList, WorkerPublic

router = APIRouter(prefix="/workers", tags=["workers"])

WorkerId = Annotated[str, Path(max_length=253, pattern=r"^[^\x00-\x1f\x7f/]+$", description="Worker id.")]


@router.get("", response_model=WorkerList, summary="List workers")
async def list_workers(store: StoreDep) -> Response:
    return JSONBytesResponse({"workers": [asdict(worker) for worker in await store.list_workers()]})


@router.post(
    "/{worker_id}/drain",
    response_model=WorkerPublic,
    summary="Ask a worker to stop claiming and finish what it runs",
    responses={404: {"model": ErrorPublic, "description": "No such worker."}},
)
async def drain_worker(worker_id: WorkerId, store: StoreDep, request: Request) -> Response:
    await store.request_drain(worker_id)
    await audit.record(request, store, "drain", [], f"worker {worker_id}")
    for worker in await store.list_workers():
        if worker.id == worker_id:
            return JSONBytesResponse(asdict(worker))
    raise NotFound(f"worker {worker_id} not found")
