/*
 * An offscreen GL program for the 3D tests: EGL on Mesa's surfaceless
 * platform, GLES 2 into a framebuffer object, N frames that each clear to
 * a colour of their own and draw a green triangle over the left half, and
 * every frame's pixels read back and checked. Prints one line:
 *
 *   GLCHECK ok renderer=<GL_RENDERER> frames=<N> fps=<F>
 *   GLCHECK FAIL <why>
 *
 * In the guest it runs on Mesa's virgl driver through gpu-airlock; on the
 * host, the same program on llvmpipe directly is what the frame rate is
 * compared with (tests/gpu3d/check, tests/tests/gpu3d.rs).
 *
 *   gl-check [FRAMES] [SIZE]
 *
 * C, not Rust: it is built with the Mesa headers of the root it runs in
 * (tests/gpu3d/check builds it there), and no crate of this workspace
 * speaks EGL.
 */
#include <EGL/egl.h>
#include <EGL/eglext.h>
#include <GLES2/gl2.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int fail(const char *why)
{
    printf("GLCHECK FAIL %s (EGL error %#x, GL error %#x)\n", why, eglGetError(), glGetError());
    return 1;
}

static GLuint shader(GLenum type, const char *src)
{
    GLuint s = glCreateShader(type);
    glShaderSource(s, 1, &src, NULL);
    glCompileShader(s);
    GLint ok = 0;
    glGetShaderiv(s, GL_COMPILE_STATUS, &ok);
    return ok ? s : 0;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int frames = argc > 1 ? atoi(argv[1]) : 30;
    int size = argc > 2 ? atoi(argv[2]) : 256;
    if (frames < 1 || size < 8 || size > 4096)
        return fail("usage: gl-check [FRAMES] [SIZE]");

    EGLDisplay dpy = eglGetPlatformDisplay(EGL_PLATFORM_SURFACELESS_MESA, EGL_DEFAULT_DISPLAY, NULL);
    if (dpy == EGL_NO_DISPLAY || !eglInitialize(dpy, NULL, NULL))
        return fail("no surfaceless EGL display");
    if (!eglBindAPI(EGL_OPENGL_ES_API))
        return fail("eglBindAPI");
    const EGLint ctx_attribs[] = {EGL_CONTEXT_CLIENT_VERSION, 2, EGL_NONE};
    EGLContext ctx = eglCreateContext(dpy, EGL_NO_CONFIG_KHR, EGL_NO_CONTEXT, ctx_attribs);
    if (ctx == EGL_NO_CONTEXT)
        return fail("eglCreateContext");
    if (!eglMakeCurrent(dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, ctx))
        return fail("eglMakeCurrent without a surface");
    const char *renderer = (const char *)glGetString(GL_RENDERER);

    GLuint tex, fb;
    glGenTextures(1, &tex);
    glBindTexture(GL_TEXTURE_2D, tex);
    glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA, size, size, 0, GL_RGBA, GL_UNSIGNED_BYTE, NULL);
    glGenFramebuffers(1, &fb);
    glBindFramebuffer(GL_FRAMEBUFFER, fb);
    glFramebufferTexture2D(GL_FRAMEBUFFER, GL_COLOR_ATTACHMENT0, GL_TEXTURE_2D, tex, 0);
    if (glCheckFramebufferStatus(GL_FRAMEBUFFER) != GL_FRAMEBUFFER_COMPLETE)
        return fail("incomplete framebuffer");

    GLuint vs = shader(GL_VERTEX_SHADER, "attribute vec2 p; void main() { gl_Position = vec4(p, 0.0, 1.0); }");
    GLuint fs = shader(GL_FRAGMENT_SHADER,
                       "precision mediump float; void main() { gl_FragColor = vec4(0.0, 1.0, 0.0, 1.0); }");
    if (!vs || !fs)
        return fail("shader compile");
    GLuint prog = glCreateProgram();
    glAttachShader(prog, vs);
    glAttachShader(prog, fs);
    glBindAttribLocation(prog, 0, "p");
    glLinkProgram(prog);
    GLint linked = 0;
    glGetProgramiv(prog, GL_LINK_STATUS, &linked);
    if (!linked)
        return fail("program link");
    glUseProgram(prog);
    /* Covers x < 0 (the left half) of normalised device coordinates. */
    static const GLfloat tri[] = {-1.0f, -1.0f, 0.0f, -1.0f, -1.0f, 3.0f, 0.0f, 3.0f, -1.0f, 3.0f, 0.0f, -1.0f};
    glVertexAttribPointer(0, 2, GL_FLOAT, GL_FALSE, 0, tri);
    glEnableVertexAttribArray(0);
    glViewport(0, 0, size, size);

    unsigned char *pixels = malloc((size_t)size * size * 4);
    if (!pixels)
        return fail("out of memory");
    double start = now();
    for (int f = 0; f < frames; f++) {
        /* Red and blue change each frame, so a stale frame is caught. */
        unsigned char red = (unsigned char)(f * 37 % 256), blue = (unsigned char)(255 - f * 11 % 256);
        glClearColor(red / 255.0f, 0.0f, blue / 255.0f, 1.0f);
        glClear(GL_COLOR_BUFFER_BIT);
        glDrawArrays(GL_TRIANGLES, 0, 6);
        glReadPixels(0, 0, size, size, GL_RGBA, GL_UNSIGNED_BYTE, pixels);
        for (int y = 0; y < size; y += size / 8) {
            for (int x = 0; x < size; x += size / 8) {
                const unsigned char *p = pixels + ((size_t)y * size + x) * 4;
                int left = x < size / 2;
                unsigned char want[4] = {left ? 0 : red, left ? 255 : 0, left ? 0 : blue, 255};
                for (int c = 0; c < 4; c++) {
                    if (abs(p[c] - want[c]) > 1) {
                        printf("GLCHECK FAIL frame %d pixel (%d, %d) is %d,%d,%d,%d, not %d,%d,%d,%d\n", f, x,
                               y, p[0], p[1], p[2], p[3], want[0], want[1], want[2], want[3]);
                        return 1;
                    }
                }
            }
        }
    }
    double took = now() - start;
    if (glGetError() != GL_NO_ERROR)
        return fail("a GL call failed");
    printf("GLCHECK ok renderer=%s frames=%d size=%d fps=%.1f\n", renderer, frames, size, frames / took);
    eglMakeCurrent(dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT);
    eglDestroyContext(dpy, ctx);
    eglTerminate(dpy);
    return 0;
}
