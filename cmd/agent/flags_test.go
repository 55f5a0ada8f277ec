package main

import (
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/line-agent/line-agent/agent"
)

// settingFlagNames maps the flag name a setting's flag would have to its
// environment variable, for every field of agent.Config: the tag in lower
// case with dashes (CHAT_DB: chat-db), and the two short names the flags
// have always had (data, ca).
func settingFlagNames() map[string]string {
	short := map[string]string{"DATA_DIR": "data", "CA_FILE": "ca"}
	out := map[string]string{}
	t := reflect.TypeOf(agent.Config{})
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("envconfig")
		name := strings.ToLower(strings.ReplaceAll(tag, "_", "-"))
		if s, ok := short[tag]; ok {
			name = s
		}
		out[name] = agent.EnvPrefix + "_" + tag
	}
	return out
}

// notTheSetting are flags named like a setting that are not it: install
// and uninstall run the launchctl their --launchctl names (default
// /bin/launchctl), not LINE_AGENT_LAUNCHCTL, which doctor and the health
// probes use.
var notTheSetting = map[string]bool{"install --launchctl": true, "uninstall --launchctl": true}

var (
	flagLine = regexp.MustCompile(`^  -([a-z0-9-]+)`)
	envName  = regexp.MustCompile(`\(env (LINE_AGENT_[A-Z0-9_]+)\)`)
)

// helpFlags runs `line-agent NAME -h` and returns each flag's usage text.
func helpFlags(t *testing.T, name string) map[string]string {
	t.Helper()
	code, _, errOut := run(t, name, "-h")
	flags := map[string]string{}
	var cur string
	for _, l := range strings.Split(errOut, "\n") {
		if m := flagLine.FindStringSubmatch(l); m != nil {
			cur = m[1]
			flags[cur] = ""
			continue
		}
		if cur != "" && strings.HasPrefix(l, "    \t") {
			flags[cur] += strings.TrimPrefix(l, "    \t") + " "
		}
	}
	if len(flags) > 0 && code != 0 {
		t.Errorf("%s -h exit %d, want 0", name, code)
	}
	return flags
}

// Every subcommand's -h names the environment variable of each flag that
// has one, and only variables the agent reads.
func TestHelpNamesEachFlagsEnvironmentVariable(t *testing.T) {
	settings := settingFlagNames()
	known := map[string]bool{}
	for _, env := range settings {
		known[env] = true
	}
	withFlags := 0
	for _, c := range commands() {
		flags := helpFlags(t, c.name)
		if len(flags) > 0 {
			withFlags++
		}
		for name, usage := range flags {
			for _, m := range envName.FindAllStringSubmatch(usage, -1) {
				if !known[m[1]] {
					t.Errorf("%s -h: --%s names %s, which the agent does not read", c.name, name, m[1])
				}
			}
			env, ok := settings[name]
			if !ok || notTheSetting[c.name+" --"+name] {
				continue
			}
			if !strings.Contains(usage, "(env "+env+")") {
				t.Errorf("%s -h: --%s does not name %s: %q", c.name, name, env, usage)
			}
		}
	}
	if withFlags < 8 {
		t.Errorf("only %d subcommands printed flags for -h", withFlags)
	}
	// The settings' flags are all there, each with its variable.
	run := helpFlags(t, "run")
	for _, name := range []string{"data", "relay", "ca", "driver", "lines", "chat-db", "log-level", "log-format", "status-socket", "sim-latency"} {
		if !strings.Contains(run[name], "(env "+settings[name]+")") {
			t.Errorf("run -h: --%s: %q, want (env %s)", name, run[name], settings[name])
		}
	}
}

// A flag bound to something that is not a Config field is a programming
// error configFlags refuses at once, so -h can never name a wrong variable.
func TestConfigFlagRefusesAForeignPointer(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("binding a flag to a non-Config pointer did not panic")
		}
	}()
	var cfg agent.Config
	var other string
	configFlag{cfg: &cfg}.env(&other)
}

// Flags set override the environment; flags not set keep it.
func TestConfigFlagsOverrideOnlyWhatIsGiven(t *testing.T) {
	t.Setenv("LINE_AGENT_LINES", "+15550000001,+15550000002")
	t.Setenv("LINE_AGENT_SIM_LATENCY", "7ms")
	t.Setenv("LINE_AGENT_LOG_FORMAT", "json")
	cfg, err := agent.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	fs := newFlagSet("test", &strings.Builder{})
	apply := configFlags(fs, &cfg)
	if err := fs.Parse([]string{"--data", "/tmp/d", "--quota-sends", "3", "--plaintext", "--log-format", "text"}); err != nil {
		t.Fatal(err)
	}
	apply()
	if cfg.DataDir != "/tmp/d" || cfg.QuotaSends != 3 || !cfg.Plaintext || cfg.LogFormat != "text" {
		t.Errorf("given flags not applied: %+v", cfg)
	}
	if strings.Join(cfg.Lines, ",") != "+15550000001,+15550000002" || cfg.SimLatency.String() != "7ms" || cfg.Driver != "macos" {
		t.Errorf("the environment's values lost: lines %v latency %v driver %q", cfg.Lines, cfg.SimLatency, cfg.Driver)
	}
	if err := fs.Parse([]string{"--shutdown-grace", "soon"}); err == nil || !strings.Contains(err.Error(), "want a duration") {
		t.Errorf("a bad duration: %v", err)
	}
}
