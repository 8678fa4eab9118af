// Package tools holds no code of the product. Its module pins the tools the project builds from
// source (the real Dragonfly scheduler, `tool d7y.io/dragonfly/v2/cmd/scheduler` in go.mod, built
// by scripts/tools.sh into bin/scheduler) so that their dependencies stay out of the product's
// module, and its test checks the product's Dragonfly ids against the scheduler's own package.
package tools
