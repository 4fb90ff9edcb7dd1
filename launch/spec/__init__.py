"""The job spec: schema composition and loading (`schema`: JobSpec, load_spec,
validate_tree), rules across sections (`rules`), YAML loading and `--set` (`yaml_io`),
problem reporting (`problems`), the DeepSpeed config (`deepspeed_config`) and the
command-line arguments naming a spec (`arguments`).

Nothing is imported here: `problems`, `yaml_io` and `arguments` stay light (no torch)
for the commands that only need them."""
