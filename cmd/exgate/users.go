package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/exgate/exgate/internal/auth"
	"github.com/exgate/exgate/internal/config"
)

// newUsersCmd is `exgate users`: it edits a built_in_database users file
// (YAML, or CSV by extension). Passwords are stored as bcrypt hashes and
// read from --password or standard input, never echoed.
func newUsersCmd(stdin io.Reader, stdout io.Writer) *cobra.Command {
	var file string
	cmd := &cobra.Command{Use: "users", Short: "Manage a built-in users file (authentication.users_file)"}
	cmd.PersistentFlags().StringVarP(&file, "file", "f", "users.yaml", "users file (.yaml or .csv)")
	read := func() ([]config.User, error) {
		users, err := auth.ReadUsersFile(file)
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return users, err
	}
	var password string
	var superuser bool
	add := &cobra.Command{
		Use:   "add USER_ID",
		Short: "Add a user, or set a user's password",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if password == "" {
				line, err := bufio.NewReader(stdin).ReadString('\n')
				if err != nil && line == "" {
					return errors.New("give the password with --password or on standard input")
				}
				password = strings.TrimRight(line, "\r\n")
			}
			hash, err := auth.HashPassword(password)
			if err != nil {
				return err
			}
			users, err := read()
			if err != nil {
				return err
			}
			u := config.User{UserID: args[0], Password: hash, IsSuperuser: superuser}
			replaced := false
			for i := range users {
				if users[i].UserID == u.UserID {
					users[i], replaced = u, true
				}
			}
			if !replaced {
				users = append(users, u)
			}
			if err := auth.WriteUsersFile(file, users); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: %s %s\n", file, map[bool]string{true: "updated", false: "added"}[replaced], u.UserID)
			return nil
		},
	}
	add.Flags().StringVar(&password, "password", "", "the password (default: read a line from standard input)")
	add.Flags().BoolVar(&superuser, "superuser", false, "the user bypasses authorization")
	del := &cobra.Command{
		Use:   "delete USER_ID",
		Short: "Delete a user",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			users, err := read()
			if err != nil {
				return err
			}
			kept := users[:0]
			for _, u := range users {
				if u.UserID != args[0] {
					kept = append(kept, u)
				}
			}
			if len(kept) == len(users) {
				return fmt.Errorf("%s: no user %q", file, args[0])
			}
			if err := auth.WriteUsersFile(file, kept); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: deleted %s\n", file, args[0])
			return nil
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List user ids (never passwords)",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			users, err := read()
			if err != nil {
				return err
			}
			for _, u := range users {
				su := ""
				if u.IsSuperuser {
					su = "\tsuperuser"
				}
				fmt.Fprintf(stdout, "%s%s\n", u.UserID, su)
			}
			return nil
		},
	}
	cmd.AddCommand(add, del, list)
	return cmd
}
