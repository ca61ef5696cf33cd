/*
 * k8slite pause: the first process of every pod sandbox.
 *
 * It holds the sandbox's namespaces open and does nothing else: as PID 1 of a shared PID
 * namespace it reaps whatever children get re-parented to it, and it exits cleanly (status 0)
 * when the runtime stops the sandbox with SIGINT or SIGTERM. Built statically by
 * runtime/build.rs and shipped inside the agent binary as the image k8slite.local/pause.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signo)
{
	(void)signo;
	_exit(0);
}

static void reap(int signo)
{
	int saved = errno;

	(void)signo;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

static int on(int signo, void (*handler)(int), int flags)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	return sigaction(signo, &sa, NULL);
}

int main(int argc, char **argv)
{
	static const char version[] = "k8slite-pause\n";
	static const char failed[] = "pause: cannot install signal handlers\n";

	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		if (write(STDOUT_FILENO, version, sizeof(version) - 1) < 0)
			return 1;
		return 0;
	}
	if (on(SIGINT, stop, 0) < 0 || on(SIGTERM, stop, 0) < 0 ||
	    on(SIGCHLD, reap, SA_NOCLDSTOP | SA_RESTART) < 0) {
		if (write(STDERR_FILENO, failed, sizeof(failed) - 1) < 0)
			return 2;
		return 2;
	}
	for (;;)
		pause();
	/* not reached */
	return 42;
}
