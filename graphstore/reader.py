"""The dedicated Neo4j user that users' own Cypher runs as, created from the admin connection.

Why a user of its own: on Enterprise and Aura it holds only the built-in ``reader`` role, so the
server itself refuses every write, every admin command and other sessions' transactions to it.
On Community there is no role-based access control: every user may do everything, and the user
only names user queries in ``SHOW TRANSACTIONS`` and the query log. What is enforced where is
written down in ``graphstore/SCHEMA.md`` ("Users' own Cypher").

:func:`ensure_reader` is idempotent: it creates the user when missing, resets its password when
it no longer logs in, and on Enterprise leaves it with ``reader`` (and ``PUBLIC``) only.
"""

from __future__ import annotations

from neo4j import Driver

EDITION = "CALL dbms.components() YIELD edition RETURN edition"
USER_EXISTS = "SHOW USERS YIELD user WHERE user = $name RETURN count(*) AS n"
CREATE_USER = ("CREATE USER $name IF NOT EXISTS SET PLAINTEXT PASSWORD $password "
               "CHANGE NOT REQUIRED")
RESET_PASSWORD = "ALTER USER $name SET PLAINTEXT PASSWORD $password CHANGE NOT REQUIRED"
USER_ROLES = "SHOW USERS YIELD user, roles WHERE user = $name RETURN roles"
GRANT_READER = "GRANT ROLE reader TO $name"
REVOKE_ROLE = "REVOKE ROLE $role FROM $name"
#: Roles the query user may keep on Enterprise: ``PUBLIC`` is every user's and cannot be revoked.
KEPT_ROLES = frozenset({"reader", "PUBLIC"})


def server_edition(admin: Driver) -> str:
    """``community`` or ``enterprise`` (Aura says ``enterprise``)."""
    records, _, _ = admin.execute_query(EDITION, database_="system")
    return str(records[0]["edition"])


def ensure_reader(admin: Driver, *, name: str, password: str) -> str:
    """Make ``name`` a user who logs in with ``password`` and, where the server has roles, holds
    only ``reader``; returns the server's edition. ``admin`` must be an admin's driver."""
    edition = server_edition(admin)
    records, _, _ = admin.execute_query(USER_EXISTS, name=name, database_="system")
    if records[0]["n"] == 0:
        admin.execute_query(CREATE_USER, name=name, password=password, database_="system")
    elif not admin.verify_authentication(auth=(name, password)):
        admin.execute_query(RESET_PASSWORD, name=name, password=password, database_="system")
    if edition != "community":
        _only_reader(admin, name)
    return edition


def _only_reader(admin: Driver, name: str) -> None:
    """Enterprise: grant ``reader`` and revoke every other role but ``PUBLIC``."""
    admin.execute_query(GRANT_READER, name=name, database_="system")
    records, _, _ = admin.execute_query(USER_ROLES, name=name, database_="system")
    for role in sorted(set(records[0]["roles"] or ()) - KEPT_ROLES):
        admin.execute_query(REVOKE_ROLE, role=role, name=name, database_="system")
