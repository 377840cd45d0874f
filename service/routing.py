"""``GET`` routes that also answer ``HEAD``, each method with its own OpenAPI operation id.

FastAPI gives both methods of one ``api_route(methods=["GET", "HEAD"])`` the same operation id,
which makes the document invalid for client generators (and warns "Duplicate Operation ID").
Here ``HEAD`` is a second route to the same function, with an id of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI


def get_and_head(router: APIRouter | FastAPI, path: str, **options: Any
                 ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``router.get(path, **options)`` plus its ``HEAD`` twin."""
    def register(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        router.add_api_route(path, endpoint, methods=["GET"], **options)
        head_id = re.sub(r"\W", "_", f"{endpoint.__name__}{path}") + "_head"
        router.add_api_route(path, endpoint, methods=["HEAD"], operation_id=head_id, **options)
        return endpoint
    return register
