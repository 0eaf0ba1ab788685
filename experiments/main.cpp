// The peel command: subcommands are registered in experiments/cli.cpp.
int main() { return 0; }
