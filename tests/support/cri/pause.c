/*
 * hotnic test pause program: the pod sandbox's only process.
 * Blocks until SIGTERM or SIGINT, then exits 0; as PID 1 it also reaps children.
 * Built with `gcc -static` by build-pause-image.sh at test time.
 */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>

static volatile sig_atomic_t done;

static void on_stop(int sig)
{
	(void)sig;
	done = 1;
}

static void on_child(int sig)
{
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(void)
{
	struct sigaction stop = {0}, child = {0};
	sigset_t blocked, waiting;

	/* Block the signals first so none is lost between the check of `done` and sigsuspend. */
	sigemptyset(&blocked);
	sigaddset(&blocked, SIGTERM);
	sigaddset(&blocked, SIGINT);
	sigaddset(&blocked, SIGCHLD);
	sigprocmask(SIG_BLOCK, &blocked, &waiting);

	stop.sa_handler = on_stop;
	sigemptyset(&stop.sa_mask);
	sigaction(SIGTERM, &stop, NULL);
	sigaction(SIGINT, &stop, NULL);
	child.sa_handler = on_child;
	sigemptyset(&child.sa_mask);
	child.sa_flags = SA_NOCLDSTOP;
	sigaction(SIGCHLD, &child, NULL);

	sigdelset(&waiting, SIGTERM);
	sigdelset(&waiting, SIGINT);
	sigdelset(&waiting, SIGCHLD);
	while (!done)
		sigsuspend(&waiting);
	return 0;
}
