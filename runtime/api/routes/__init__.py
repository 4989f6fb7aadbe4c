"""The API's routes under /data/sensei, one `APIRouter` per resource; `app.create_app` includes
them. The routes share `api.deps` (caller, handles, bodies, responses) and `collection` (the
generic list/create/get/replace/delete of a kind)."""
