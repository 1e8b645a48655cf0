package config

import (
	"fmt"
	"os"
)

// ResolveMode picks the deployment mode. The first non-empty of these wins:
//
//	flag (--mode) > TQ_MODE > DEPLOYMENT_MODE > server.deployment_mode
//	> deployment.mode > "dev"
//
// The winning value must be "dev" or "prod"; otherwise the error names where
// it came from. Lower-precedence sources are not consulted once one is set.
// getenv nil means os.Getenv; c nil means no configuration files.
func ResolveMode(flag string, getenv func(string) string, c *Config) (string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	type source struct{ value, name string }
	sources := []source{
		{flag, "--mode"},
		{getenv("TQ_MODE"), "environment variable TQ_MODE"},
		{getenv("DEPLOYMENT_MODE"), "environment variable DEPLOYMENT_MODE"},
	}
	if c != nil {
		sources = append(sources,
			source{c.Server.DeploymentMode, "server.deployment_mode in " + ServerFile},
			source{c.Deployment.Mode, "deployment.mode in " + DeploymentFile})
	}
	for _, s := range sources {
		if s.value == "" {
			continue
		}
		if s.value != ModeDev && s.value != ModeProd {
			return "", fmt.Errorf("invalid deployment mode %q from %s: must be %q or %q", s.value, s.name, ModeDev, ModeProd)
		}
		return s.value, nil
	}
	return ModeDev, nil
}
