<#
.SYNOPSIS
  Installs re6mesh: mesh.exe and wintun.dll into Program Files, the state directory
  %ProgramData%\re6mesh (SYSTEM and Administrators only: the node key lives there), and the
  Windows service "re6mesh" (`mesh service install`), started at boot once joined.

.EXAMPLE
  # from an Administrator PowerShell, in the unpacked zip:
  powershell -ExecutionPolicy Bypass -File .\install.ps1 -Token TOKEN
#>
param(
    # A join token from the network's registry: joins this machine before the service starts.
    [string]$Token = "",
    # Where mesh.exe and wintun.dll go.
    [string]$Destination = (Join-Path $env:ProgramFiles "re6mesh")
)
$ErrorActionPreference = "Stop"

$identity = [Security.Principal.WindowsIdentity]::GetCurrent()
$principal = New-Object Security.Principal.WindowsPrincipal($identity)
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    Write-Error "install.ps1 installs a service: run it from an Administrator PowerShell"
    exit 2
}
$here = Split-Path -Parent $MyInvocation.MyCommand.Path
$state = Join-Path $env:ProgramData "re6mesh"
$mesh = Join-Path $Destination "mesh.exe"

# A running service holds mesh.exe and wintun.dll open: stop it before replacing them.
if (Get-Service -Name re6mesh -ErrorAction SilentlyContinue) {
    Stop-Service -Name re6mesh -ErrorAction SilentlyContinue
}
New-Item -ItemType Directory -Force -Path $Destination | Out-Null
# wintun.dll next to mesh.exe: where the node loads it from.
Copy-Item -Force -Path (Join-Path $here "mesh.exe"), (Join-Path $here "wintun.dll") -Destination $Destination

# The state directory: full control for SYSTEM (S-1-5-18) and Administrators (S-1-5-32-544),
# nothing inherited from ProgramData (where every user may read).
New-Item -ItemType Directory -Force -Path $state | Out-Null
& icacls.exe $state /inheritance:r /grant:r "*S-1-5-18:(OI)(CI)F" "*S-1-5-32-544:(OI)(CI)F" | Out-Null
if ($LASTEXITCODE -ne 0) { Write-Error "icacls could not restrict $state"; exit 1 }

if ($Token) {
    & $mesh join $Token --state-dir $state
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
}
& $mesh service install
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }

# mesh on the PATH of new prompts.
$path = [Environment]::GetEnvironmentVariable("Path", "Machine")
if (($path -split ";") -notcontains $Destination) {
    [Environment]::SetEnvironmentVariable("Path", "$path;$Destination", "Machine")
}
Write-Host "re6mesh installed in $Destination; state in $state; service re6mesh."
if (-not $Token) {
    Write-Host "Join with: mesh join TOKEN --state-dir `"$state`"; then: Start-Service re6mesh"
}
