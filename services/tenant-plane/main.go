// Command tenant-plane serves tenant users on each tenant's own database,
// chosen by the X-TENANT header.
//
// Subcommand "healthcheck" probes the local /health for container health checks.
package main

import (
	"fmt"
	"os"

	"tenantbase/libs/config"
	"tenantbase/libs/service"
	"tenantbase/services/tenant-plane/app"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "tenant-plane:", err)
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
	if len(args) == 0 {
		level, err := config.ParseLogLevel(cfg.LogLevel)
		if err != nil {
			return err
		}
		return app.Run(ctx, cfg, service.NewLogger(level))
	}
	if args[0] == "healthcheck" {
		return service.Healthcheck(cfg.HTTPAddr)
	}
	return fmt.Errorf("unknown command %q (want healthcheck)", args[0])
}
