/* placeholder until the HTTP/CLI work lands */
#include <stdio.h>
int main(void)
{
    puts("scenecomp");
    return 0;
}
