"""The URL paths of the dashboard server's own routes (shared by the server and the pages)."""

LOGIN_PATH = "/auth/login"
LOGOUT_PATH = "/auth/logout"
