"""The tenant API, CloudAPI-compatible (``/:login/...``; ``my`` is the caller's own login).

``blueprints.tenant_blueprint()`` is one parent blueprint whose hooks run before every view of its
children: the HTTP Signature is checked, the path's login resolved to the account whose
objects may be touched (``g.tenant``), and the job caller recorded (``g.job_caller``).
``/--ping`` and ``/--openapi.json`` (the OpenAPI document) need no authentication.
"""
