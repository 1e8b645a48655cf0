package config

import (
	"fmt"
	"net"
	"os"
	"strconv"
)

// AdminTokenEnv is the environment variable that sets the admin listener's
// bearer token; when set (not empty) it wins over server.admin_token, so a
// secret need not be written into config/server.yaml.
const AdminTokenEnv = "TQ_ADMIN_TOKEN"

// AdminToken is the admin listener's bearer token and where it came from:
// $TQ_ADMIN_TOKEN when set and not empty, else server.admin_token; "" and
// "" when neither is set. getenv nil means os.Getenv; c nil means no files.
func AdminToken(getenv func(string) string, c *Config) (token, source string) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if t := getenv(AdminTokenEnv); t != "" {
		return t, "environment variable " + AdminTokenEnv
	}
	if c != nil && c.Server.AdminToken != "" {
		return c.Server.AdminToken, "server.admin_token in " + ServerFile
	}
	return "", ""
}

// checkAdminListen accepts "" (off) or host:port with a port 1..65535; the
// host may be empty (every interface), an IP address or a name.
func checkAdminListen(s string) string {
	if s == "" {
		return ""
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("want host:port (127.0.0.1:8081) or \"\" for no admin listener, got %q", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("port %q of %q: want a number 1..65535", port, s)
	}
	return ""
}
