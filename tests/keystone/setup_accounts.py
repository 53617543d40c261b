"""Creates the projects, users, role assignments and the image service that
the tests use, through Keystone's API as the bootstrap admin (used by
tests/keystone/keystone.sh). Python's standard library only.

  setup_accounts.py AUTH_URL PASSWORD IMAGE_URL

AUTH_URL is Keystone's .../v3; every user gets PASSWORD. Exits non-zero with
Keystone's answer on stderr if any request fails.
"""

import json
import sys
import urllib.error
import urllib.request

DOMAIN = "default"
PROJECTS = ("demo", "alt", "service")
# user: (project, roles on it)
USERS = {
    "demo-admin": ("demo", ("admin",)),
    "demo-member": ("demo", ("member",)),
    "demo-reader": ("demo", ("reader",)),
    "alt-member": ("alt", ("member",)),
    # A service user as devstack makes one: the service role lets it validate
    # other users' tokens; admin as well, as devstack gives it.
    "glance": ("service", ("service", "admin")),
}
REGION = "RegionOne"


class Keystone:
    def __init__(self, auth_url):
        self.auth_url = auth_url.rstrip("/")
        self.token = None

    def call(self, method, path, body=None, expect=(200, 201, 204)):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.auth_url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("X-Auth-Token", self.token)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, headers, raw = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            status, headers, raw = err.code, err.headers, err.read()
        if status not in expect:
            sys.exit("%s %s: %s %s" % (method, path, status, raw.decode(errors="replace")))
        return headers, (json.loads(raw) if raw else None)

    def login(self, password):
        headers, _ = self.call("POST", "/auth/tokens", {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {
                        "name": "admin", "domain": {"id": DOMAIN},
                        "password": password}},
                },
                "scope": {"project": {"name": "admin", "domain": {"id": DOMAIN}}},
            }
        })
        self.token = headers["X-Subject-Token"]


def main(auth_url, password, image_url):
    ks = Keystone(auth_url)
    ks.login(password)

    roles = {r["name"]: r["id"] for r in ks.call("GET", "/roles")[1]["roles"]}
    projects = {}
    for name in PROJECTS:
        projects[name] = ks.call("POST", "/projects", {"project": {
            "name": name, "domain_id": DOMAIN, "enabled": True,
            "description": "keystone.sh test project"}})[1]["project"]["id"]
    for name, (project, user_roles) in USERS.items():
        user_id = ks.call("POST", "/users", {"user": {
            "name": name, "domain_id": DOMAIN, "enabled": True,
            "password": password,
            "default_project_id": projects[project]}})[1]["user"]["id"]
        for role in user_roles:
            ks.call("PUT", "/projects/%s/users/%s/roles/%s"
                    % (projects[project], user_id, roles[role]))

    service_id = ks.call("POST", "/services", {"service": {
        "type": "image", "name": "glance", "enabled": True,
        "description": "Image service"}})[1]["service"]["id"]
    for interface in ("public", "internal", "admin"):
        ks.call("POST", "/endpoints", {"endpoint": {
            "service_id": service_id, "interface": interface,
            "url": image_url, "region_id": REGION, "enabled": True}})


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
