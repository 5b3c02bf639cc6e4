// Command control-plane serves core users, organizations, tenant
// provisioning and the internal tenant API.
//
// Subcommands: "migrate" applies the core migrations and exits (run before
// the service in deployments); "healthcheck" probes the local /health for
// container health checks.
package main

import (
	"fmt"
	"os"

	"tenantbase/libs/config"
	"tenantbase/libs/service"
	"tenantbase/services/control-plane/app"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "control-plane:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	ctx, stop := service.SignalContext()
	defer stop()
	cfg, err := app.LoadConfig()
	if err != nil {
		return err
	}
	level, err := config.ParseLogLevel(cfg.LogLevel)
	if err != nil {
		return err
	}
	log := service.NewLogger(level)
	if len(args) == 0 {
		return app.Run(ctx, cfg, log)
	}
	switch args[0] {
	case "migrate":
		v, err := app.Migrate(ctx, cfg)
		if err == nil {
			log.Info("core migrations applied", "version", v)
		}
		return err
	case "healthcheck":
		return service.Healthcheck(cfg.HTTPAddr)
	}
	return fmt.Errorf("unknown command %q (want migrate or healthcheck)", args[0])
}
