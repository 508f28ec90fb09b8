/*
 * hog: a tiny memory hog for memguard's integration tests.
 *
 *   hog anon MIB                         mmap MIB MiB of anonymous memory,
 *                                        touch every page, "ready <bytes>",
 *                                        pause
 *   hog file PATH MIB                    write MIB MiB to PATH through the
 *                                        page cache (plain write(), no
 *                                        O_DIRECT, no fsync), close it,
 *                                        "ready <bytes>", pause
 *   hog grow STEP_MIB INTERVAL_MS [MAX]  every INTERVAL_MS map and touch
 *                                        STEP_MIB more, "grew <total bytes>"
 *                                        after each step; at MAX MiB (if
 *                                        given) "ready <bytes>" and pause,
 *                                        otherwise grow until killed
 *   hog compile STEP_MIB INTERVAL_MS MAX_MIB HOLD_MS
 *                                        grow as `grow` does to MAX MiB, hold
 *                                        it HOLD_MS, "done <bytes>", exit 0:
 *                                        a compiler's curve (a frozen one
 *                                        grows no further until thawed)
 *   hog procs N                          fork N - 1 children that pause (each
 *                                        SIGKILLed when the hog ends),
 *                                        "ready <N>", pause: many processes
 *                                        for one Popen
 *
 * Every line on stdout is flushed at once. SIGTERM and SIGINT end the hog
 * with status 0 at any point; an OOM kill shows as death by SIGKILL.
 * Usage errors exit 2, system call failures exit 1 with a message on stderr.
 *
 * The test harness puts the hog into its cgroup before exec, so everything
 * it allocates is charged there (tests/kernel.py, Hog).
 *
 * Build: cc -O2 -Wall -Werror -o hog hog.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024ULL * 1024ULL)
/* The write buffer of `hog file`: the only anonymous memory it keeps. */
#define FILE_CHUNK MIB
/* Non-zero, so that no page can stay backed by the shared zero page. */
#define FILL 0x5a

static void on_term(int sig)
{
	(void)sig;
	_exit(0);
}

static void install_handlers(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0) {
		perror("hog: sigaction");
		exit(1);
	}
}

static void say(const char *word, unsigned long long bytes)
{
	printf("%s %llu\n", word, bytes);
	fflush(stdout);
}

static void pause_forever(void)
{
	for (;;)
		pause();
}

static int usage(void)
{
	fprintf(stderr,
		"usage: hog anon MIB\n"
		"       hog file PATH MIB\n"
		"       hog grow STEP_MIB INTERVAL_MS [MAX_MIB]\n"
		"       hog compile STEP_MIB INTERVAL_MS MAX_MIB HOLD_MS\n"
		"       hog procs N\n");
	return 2;
}

/* A positive decimal count of MiB (or ms) small enough not to overflow. */
static int parse_count(const char *s, unsigned long long *out)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v == 0 || v > (ULLONG_MAX / MIB))
		return -1;
	*out = v;
	return 0;
}

static char *map_touched(unsigned long long bytes)
{
	char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("hog: mmap");
		exit(1);
	}
	memset(p, FILL, bytes);
	return p;
}

static int run_anon(unsigned long long mib)
{
	unsigned long long bytes = mib * MIB;

	map_touched(bytes);
	say("ready", bytes);
	pause_forever();
	return 0;
}

static int run_file(const char *path, unsigned long long mib)
{
	unsigned long long bytes = mib * MIB, done = 0;
	char *buf = map_touched(FILE_CHUNK);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0) {
		perror("hog: open");
		return 1;
	}
	while (done < bytes) {
		ssize_t n = write(fd, buf, FILE_CHUNK);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("hog: write");
			return 1;
		}
		done += (unsigned long long)n;
	}
	if (close(fd) != 0) {
		perror("hog: close");
		return 1;
	}
	say("ready", done);
	pause_forever();
	return 0;
}

static void sleep_ms(unsigned long long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* hold_ms 0: pause at MAX until killed; otherwise hold that long and exit. */
static int run_grow(unsigned long long step_mib, unsigned long long interval_ms,
		    unsigned long long max_mib, unsigned long long hold_ms)
{
	unsigned long long total = 0, step = step_mib * MIB;

	for (;;) {
		map_touched(step);
		total += step;
		say("grew", total);
		if (max_mib != 0 && total >= max_mib * MIB) {
			say("ready", total);
			if (hold_ms == 0)
				pause_forever();
			sleep_ms(hold_ms);
			say("done", total);
			return 0;
		}
		sleep_ms(interval_ms);
	}
	return 0;
}

static int run_procs(unsigned long long n)
{
	pid_t parent = getpid();

	for (unsigned long long i = 1; i < n; i++) {
		pid_t pid = fork();

		if (pid < 0) {
			perror("hog: fork");
			return 1;
		}
		if (pid == 0) {
			if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
				_exit(0);
			pause_forever();
		}
	}
	say("ready", n);
	pause_forever();
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long long a, b, c = 0;

	install_handlers();
	if (argc == 3 && strcmp(argv[1], "anon") == 0) {
		if (parse_count(argv[2], &a) != 0)
			return usage();
		return run_anon(a);
	}
	if (argc == 4 && strcmp(argv[1], "file") == 0) {
		if (parse_count(argv[3], &a) != 0)
			return usage();
		return run_file(argv[2], a);
	}
	if ((argc == 4 || argc == 5) && strcmp(argv[1], "grow") == 0) {
		if (parse_count(argv[2], &a) != 0 || parse_count(argv[3], &b) != 0)
			return usage();
		if (argc == 5 && parse_count(argv[4], &c) != 0)
			return usage();
		return run_grow(a, b, c, 0);
	}
	if (argc == 3 && strcmp(argv[1], "procs") == 0) {
		if (parse_count(argv[2], &a) != 0)
			return usage();
		return run_procs(a);
	}
	if (argc == 6 && strcmp(argv[1], "compile") == 0) {
		unsigned long long d;

		if (parse_count(argv[2], &a) != 0 || parse_count(argv[3], &b) != 0 ||
		    parse_count(argv[4], &c) != 0 || parse_count(argv[5], &d) != 0)
			return usage();
		return run_grow(a, b, c, d);
	}
	return usage();
}
