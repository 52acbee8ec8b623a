"""Moved to :mod:`escnc.rpc.users` (shared by SSH and HTTP Basic); kept for old imports."""

from escnc.rpc.users import UserError, UserInfo, UserStore, hash_password, verify_password  # noqa: F401
