// Command mycel will be the daemon, the CLI client, and the sim and bench
// commands: flags and config turned into library calls, nothing more.
//
// Not built yet: this file only records what the command will do.
package main

func main() {}
