package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/exgate/exgate/internal/apikey"
)

// newAPIKeysCmd is `exgate api-keys`: the management API's keys, in the
// file api.keys_file of the configuration given with -c. A running gateway
// picks changes up within a second.
func newAPIKeysCmd(stdout io.Writer, cfgPath *string) *cobra.Command {
	keysFile := func() (string, error) {
		cfg, err := loadConfig(*cfgPath)
		if err != nil {
			return "", err
		}
		return cfg.API.Keys(), nil
	}
	cmd := &cobra.Command{Use: "api-keys", Short: "Add, list and delete management API keys (api.keys_file)"}
	cmd.AddCommand(&cobra.Command{Use: "add NAME", Short: "Create a key and print key:secret (shown this once)", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			path, err := keysFile()
			if err != nil {
				return err
			}
			cred, err := apikey.Add(path, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, cred)
			return nil
		}})
	cmd.AddCommand(&cobra.Command{Use: "list", Short: "List the keys (never their secrets)", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			path, err := keysFile()
			if err != nil {
				return err
			}
			keys, err := apikey.Load(path)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKEY\tCREATED")
			for _, k := range keys {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", k.Name, k.Key, k.Created.Format(time.RFC3339))
			}
			return tw.Flush()
		}})
	cmd.AddCommand(&cobra.Command{Use: "delete NAME|KEY", Short: "Delete a key", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			path, err := keysFile()
			if err != nil {
				return err
			}
			if err := apikey.Delete(path, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "deleted %s\n", args[0])
			return nil
		}})
	return cmd
}
