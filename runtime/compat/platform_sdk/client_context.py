"""`ClientContext`: the credentials and sandbox a recipe passes to readers and writers.

Locally nothing is authenticated: the values are kept (any non-empty value works) so recipes that
read them back, or check that they are set, run unchanged.
"""
from __future__ import annotations

from typing import Any, Optional


class ClientContext:
    def __init__(self, api_key: Optional[str] = None, org_id: Optional[str] = None,
                 user_token: Optional[str] = None, service_token: Optional[str] = None,
                 sandbox_id: Optional[str] = None, sandbox_name: Optional[str] = None,
                 user_scratch_space_params: Any = None, **extra: Any) -> None:
        self.api_key = api_key
        self.org_id = org_id
        self.user_token = user_token
        self.service_token = service_token
        self.sandbox_id = sandbox_id
        self.sandbox_name = sandbox_name
        self.user_scratch_space_params = user_scratch_space_params
        self.extra = extra

    def get_api_key(self) -> Optional[str]:
        return self.api_key

    def get_org_id(self) -> Optional[str]:
        return self.org_id

    def get_user_token(self) -> Optional[str]:
        return self.user_token

    def get_service_token(self) -> Optional[str]:
        return self.service_token

    def get_sandbox_id(self) -> Optional[str]:
        return self.sandbox_id

    def get_sandbox_name(self) -> Optional[str]:
        return self.sandbox_name

    def __repr__(self) -> str:   # never the tokens
        return f"ClientContext(org_id={self.org_id!r}, sandbox_name={self.sandbox_name!r})"
