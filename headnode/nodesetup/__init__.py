"""Setting up and upgrading a compute node's agent over SSH: the node-side steps the jobs of
workflows/node_setup.py run, one SSH connection each (headnode.ssh.client.connect).

The node's layout is in layout.py (PREFIX is "/" on a real node). Every function raises
``NodeSetupError(code, message)`` (errors.py) or a ``headnode.ssh.errors.SshError``, and
returns a small JSON-able dict for the job record that never holds a secret.

API (stable from 14:45 UTC):

- ``bundle.prepare(settings, version: str | None = None) -> AgentBundle``
  (``.version``, ``.directory``, ``.wheels``, ``.to_dict()``); None builds a wheel of the
  checkout the head node runs from. ``bundle.store_wheel(settings, filename, data) -> str``
  (the version); ``bundle.stored_versions(settings) -> list[str]``.
- ``layout.NodeLayout(prefix="/")``: the node's paths.
- ``node.inspect(conn, layout, backend, pool) -> NodeState`` (``.to_dict()``,
  ``NodeState.from_dict(d)`` to read ``before`` back from a job record);
  ``node.check(state, backend, bundle=None) -> None`` (NodeSetupError "NodeNotReady").
- ``nodeconfig.node_config(settings, server_uuid, layout, backend, pool="", nic_tags="",
  hostname="") -> NodeConfig`` (holds secrets: never record it);
  ``credentials.credentials_for(settings, server_uuid) -> str``.
- ``install.upload(conn, layout, bundle)``, ``install.install(conn, layout, bundle)``,
  ``install.write_config(conn, layout, config)``, ``install.activate(conn, layout,
  version)``, ``install.restore(conn, layout, before)``,
  ``install.remove_release(conn, layout, version)``: each -> dict with ``"changed": bool``.
"""
